/**
 * A flock(2) lock on a file that waits without blocking the event loop: the
 * signal forwarding of `shmkeep run` runs on that loop, so we poll LOCK_NB on
 * a timer instead of sleeping inside the system call on some thread.
 */
import fs from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { hasCode, sys, SystemError } from './errors'
import { native } from './native'
import { checkBool, checkEntryOptions } from './options'

export interface LockOptions {
  /** Exclusive (default) or shared. */
  exclusive?: boolean
  /** Give up after this many milliseconds with an EWOULDBLOCK error (default: wait forever; 0: try once). */
  timeoutMs?: number
  /** Stop waiting when this signal aborts. */
  signal?: AbortSignal
  /**
   * Open the file read-only and never create it (ENOENT when missing): for a
   * file on a read-only mount. flock(2) needs no write access; take a shared
   * lock then — an exclusive one on a read-only descriptor fails on NFS,
   * where flock is emulated with fcntl locks.
   */
  readOnly?: boolean
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
  const readOnly = checkBool('readOnly', options.readOnly, false)
  options.signal?.throwIfAborted()
  // O_NONBLOCK: a FIFO in the place of the lock file must not hang the open.
  const mode = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR | fs.constants.O_CREAT
  let fd: number
  try {
    fd = sys(path, () => fs.openSync(path, mode | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600))
  } catch (e) {
    // A directory (EISDIR) or a symbolic link (ELOOP: O_NOFOLLOW) in the
    // lock's place: say what is there, as for a FIFO, not the bare errno.
    // The code (ELOOP, EISDIR) and syscall stay the system's.
    const st = hasCode(e, 'EISDIR', 'ELOOP') ? lstatOrNull(path) : null
    if (st && !st.isFile()) {
      const raw = e as SystemError
      throw new SystemError(`${raw.code}: ${notRegular(path, st).message}`, { code: raw.code, errno: raw.errno, syscall: raw.syscall })
    }
    throw e
  }
  const st = fs.fstatSync(fd)
  if (!st.isFile()) {
    fs.closeSync(fd)
    throw notRegular(path, st)
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

function lstatOrNull(path: string): fs.Stats | null {
  try {
    return fs.lstatSync(path)
  } catch {
    return null
  }
}

/** The error for a lock path that holds something else than a regular file (code EISDIR, as before). */
function notRegular(path: string, st: fs.Stats): Error {
  const what = st.isFIFO() ? ' (a FIFO)' : st.isSymbolicLink() ? ' (a symbolic link)' : st.isDirectory() ? ' (a directory)' : ''
  const err = new Error(`${path}: is not a regular file${what}; shmkeep locks only a regular file`) as Error & { code: string }
  err.code = 'EISDIR'
  return err
}

/**
 * Who holds a lock on `file`, as far as /proc/locks shows it: "pid 1234
 * (command)" per holder. A holder in another PID namespace shows as pid 0;
 * a holder on another machine (NFS) not at all: then the list is empty.
 */
export function lockHolders(file: string): string[] {
  let st: fs.Stats
  let text: string
  try {
    st = fs.statSync(file)
    text = fs.readFileSync('/proc/locks', 'utf8')
  } catch {
    return []
  }
  // st_dev as the kernel encodes it (new_encode_dev): /proc/locks prints major:minor.
  const dev = BigInt(st.dev)
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn))
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn))
  const out: string[] = []
  for (const line of text.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks a waiter).
    const f = line.trim().split(/\s+/)
    if (f[1] === '->') continue
    const m = /^([0-9a-f]+):([0-9a-f]+):(\d+)$/.exec(f[5] ?? '')
    if (!m || parseInt(m[1]!, 16) !== major || parseInt(m[2]!, 16) !== minor || Number(m[3]) !== st.ino) continue
    const pid = Number(f[4])
    if (pid === 0) {
      out.push('a process in another PID namespace (pid 0 here)')
      continue
    }
    let cmd = '?'
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') || '?'
    } catch {
      // gone, or not visible
    }
    out.push(`pid ${pid} (${cmd})`)
  }
  return out
}
