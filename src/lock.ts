/**
 * A flock(2) lock on a file that waits without blocking the event loop: the
 * signal forwarding of `shmkeep run` runs on that loop, so we poll LOCK_NB on
 * a timer instead of sleeping inside the system call on some thread.
 */
import fs from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { sys } from './errors'
import { native } from './native'
import { checkBool, checkEntryOptions } from './options'

export interface LockOptions {
  /** Exclusive (default) or shared. */
  exclusive?: boolean
  /** Give up after this many milliseconds with an EWOULDBLOCK error (default: wait forever; 0: try once). */
  timeoutMs?: number
  /** Stop waiting when this signal aborts. */
  signal?: AbortSignal
}

/** A held lock; release() closes the file, which drops the lock. */
export interface FileLock {
  readonly path: string
  release(): void
}

/** Take a flock on `path` (created 0600 if missing; a symlink is not followed). */
export async function lockFile(path: string, options: LockOptions = {}): Promise<FileLock> {
  checkEntryOptions('lockFile', options)
  const exclusive = checkBool('exclusive', options.exclusive, true)
  options.signal?.throwIfAborted()
  // O_NONBLOCK: a FIFO in the place of the lock file must not hang the open.
  const fd = sys(path, () => fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600))
  const st = fs.fstatSync(fd)
  if (!st.isFile()) {
    fs.closeSync(fd)
    const err = new Error(`${path}: is not a regular file${st.isFIFO() ? ' (a FIFO)' : ''}; shmkeep locks only a regular file`) as Error & { code: string }
    err.code = 'EISDIR'
    throw err
  }
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs
  let wait = 5
  try {
    while (!sys(path, () => native.flockTry(fd, exclusive))) {
      options.signal?.throwIfAborted()
      if (Date.now() >= deadline) {
        const err = new Error(`EWOULDBLOCK: ${path} is locked by another process`) as Error & { code: string }
        err.code = 'EWOULDBLOCK'
        throw err
      }
      await sleep(Math.min(wait, Math.max(1, deadline - Date.now())), undefined, { signal: options.signal })
      wait = Math.min(wait * 2, 100)
    }
  } catch (e) {
    fs.closeSync(fd)
    throw e
  }
  let held = true
  return {
    path,
    release() {
      if (!held) return
      held = false
      fs.closeSync(fd)
    },
  }
}
