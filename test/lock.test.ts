/**
 * lockFile: a flock(2) lock that waits without blocking the event loop.
 * The other holder is a real second process (node + dist/), driven over its
 * stdin: "release" drops the lock, "exit" ends the process.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { lockFile, type FileLock } from '../src/index'
import { dist, have, run, runNode, tempDir } from './helpers'

let dir: string
let cleanup: () => void
let children: ChildProcessWithoutNullStreams[] = []
let locks: FileLock[] = []

beforeEach(() => {
  ;({ dir, cleanup } = tempDir())
})
afterEach(() => {
  for (const l of locks) l.release()
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  locks = []
  children = []
  cleanup()
})

async function lock(p: string, options?: Parameters<typeof lockFile>[1]): Promise<FileLock> {
  const l = await lockFile(p, options)
  locks.push(l)
  return l
}

interface Holder {
  child: ChildProcessWithoutNullStreams
  /** Resolves when the child printed this line. */
  saw(line: string): Promise<void>
  send(command: 'release' | 'exit'): void
  exited: Promise<number | null>
}

/** A second process that takes the lock on `p` and holds it until told otherwise. */
async function holder(p: string, mode: 'exclusive' | 'shared' = 'exclusive'): Promise<Holder> {
  const script = `
    const lib = require(${JSON.stringify(dist)});
    lib.lockFile(process.argv[1], { exclusive: process.argv[2] === 'exclusive' }).then((lock) => {
      console.log('locked');
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => {
        if (d.includes('release')) { lock.release(); console.log('released') }
        if (d.includes('exit')) process.exit(0);
      });
    }, (e) => { console.log('error ' + e.code); process.exit(1) });`
  const child = spawn(process.execPath, ['-e', script, '--', p, mode])
  children.push(child)
  let out = ''
  const waiters: Array<{ line: string; resolve(): void }> = []
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (d: string) => {
    out += d
    for (const w of waiters) if (out.split('\n').includes(w.line)) w.resolve()
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const h: Holder = {
    child,
    saw: (line) =>
      new Promise<void>((resolve, reject) => {
        if (out.split('\n').includes(line)) return resolve()
        waiters.push({ line, resolve })
        exited.then((code) => reject(new Error(`holder exited (${code}) before printing "${line}"; stdout: ${out}`)))
      }),
    send: (command) => child.stdin.write(command + '\n'),
    exited,
  }
  await h.saw('locked')
  return h
}

/** What a one-shot lockFile(p, { timeoutMs: 0 }) in another process gets. */
function tryInOtherProcess(p: string, exclusive = true): string {
  const r = runNode(
    `lib.lockFile(process.argv[1], { timeoutMs: 0, exclusive: process.argv[2] === 'x' })
       .then((l) => { l.release(); console.log(JSON.stringify('taken')) }, (e) => console.log(JSON.stringify(e.code)))`,
    { args: [p, exclusive ? 'x' : 's'] },
  )
  return r.json
}

/** File descriptors of this process open on `p`. */
function fdsOn(p: string): number {
  let n = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === p) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}

/** Resolves once `cond()` is true, checking on each turn of the event loop. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await sleep(10)
}

describe('lockFile: exclusive against another process', () => {
  test('with timeoutMs it gives up with code EWOULDBLOCK, not before timeoutMs', async () => {
    const p = path.join(dir, 'lock')
    await holder(p)
    const start = Date.now()
    const e = await lockFile(p, { timeoutMs: 300 }).then(
      () => undefined,
      (err) => err,
    )
    const waited = Date.now() - start
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('EWOULDBLOCK')
    expect(e.message).toContain(p)
    expect(waited).toBeGreaterThanOrEqual(300) // a lower bound only: it waited at least as asked
    expect(fdsOn(p)).toBe(0) // nothing left open after giving up
  })

  test('timeoutMs 0 tries once', async () => {
    const p = path.join(dir, 'lock')
    await holder(p)
    await expect(lockFile(p, { timeoutMs: 0 })).rejects.toMatchObject({ code: 'EWOULDBLOCK' })
    expect(fdsOn(p)).toBe(0)
  })

  test('waits while the event loop keeps running, and gets the lock after the holder releases it', async () => {
    const p = path.join(dir, 'lock')
    const h = await holder(p)
    let ticks = 0
    const interval = setInterval(() => ticks++, 5)
    try {
      let settled = false
      const pending = lock(p).finally(() => {
        settled = true
      })
      await until(() => ticks >= 10)
      expect(settled).toBe(false) // still waiting, and timers ran meanwhile
      const ticksWhileWaiting = ticks
      h.send('release')
      await h.saw('released')
      const l = await pending
      expect(ticksWhileWaiting).toBeGreaterThanOrEqual(10)
      expect(l.path).toBe(p)
      // Now we hold it: the other side cannot have it.
      expect(tryInOtherProcess(p)).toBe('EWOULDBLOCK')
      l.release()
      expect(tryInOtherProcess(p)).toBe('taken')
    } finally {
      clearInterval(interval)
    }
  })

  test('the lock is free when the holder process dies', async () => {
    const p = path.join(dir, 'lock')
    const h = await holder(p)
    const pending = lock(p)
    h.child.kill('SIGKILL')
    const l = await pending
    expect(l.path).toBe(p)
  })

  test('an AbortSignal stops the wait', async () => {
    const p = path.join(dir, 'lock')
    await holder(p)
    const controller = new AbortController()
    let settled = false
    const pending = lockFile(p, { signal: controller.signal }).finally(() => {
      settled = true
    })
    await sleep(50)
    expect(settled).toBe(false)
    controller.abort()
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' })
    expect(fdsOn(p)).toBe(0)
    // A signal aborted before the call, while the lock is taken: refused at once.
    await expect(lockFile(p, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' })
    // A reason given to abort() reaches the caller (as the error, or as its cause).
    const c2 = new AbortController()
    const p2 = lockFile(p, { signal: c2.signal })
    const reason = new Error('shutting down')
    c2.abort(reason)
    const e = await p2.then(() => undefined, (err) => err)
    expect(e === reason || (e?.name === 'AbortError' && e.cause === reason)).toBe(true)
    expect(fdsOn(p)).toBe(0)
  })

  test('the other process waits for us too', async () => {
    const p = path.join(dir, 'lock')
    const l = await lock(p)
    expect(tryInOtherProcess(p)).toBe('EWOULDBLOCK')
    expect(tryInOtherProcess(p, false)).toBe('EWOULDBLOCK') // shared waits for exclusive
    if (have('flock')) {
      expect(run('flock', ['-n', p, 'true']).status).toBe(1) // it is a flock(2) lock
    }
    l.release()
    if (have('flock')) expect(run('flock', ['-n', p, 'true']).status).toBe(0)
  })
})

describe('lockFile: shared locks', () => {
  test('shared locks coexist; an exclusive one waits for them', async () => {
    const p = path.join(dir, 'lock')
    const h = await holder(p, 'shared')
    const mine = await lock(p, { exclusive: false, timeoutMs: 0 })
    expect(tryInOtherProcess(p, false)).toBe('taken')
    expect(tryInOtherProcess(p, true)).toBe('EWOULDBLOCK')
    await expect(lockFile(p, { timeoutMs: 0 })).rejects.toMatchObject({ code: 'EWOULDBLOCK' })
    mine.release()
    expect(tryInOtherProcess(p, true)).toBe('EWOULDBLOCK') // the holder still has its shared lock
    h.send('release')
    await h.saw('released')
    expect(tryInOtherProcess(p, true)).toBe('taken')
  })
})

describe('lockFile: readOnly (a file on a read-only mount)', () => {
  test('never creates the file (ENOENT); on an existing one, a shared lock through a read-only descriptor keeps an exclusive one out', async () => {
    const missing = path.join(dir, 'none.lock')
    await expect(lockFile(missing, { readOnly: true })).rejects.toMatchObject({ code: 'ENOENT' })
    expect(fs.existsSync(missing)).toBe(false)
    const p = path.join(dir, 'lock')
    fs.writeFileSync(p, '', { mode: 0o400 })
    const mine = await lock(p, { readOnly: true, exclusive: false, timeoutMs: 0 })
    const fd = fs.readdirSync('/proc/self/fd').find((n) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${n}`) === p
      } catch {
        return false
      }
    })
    const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!
    expect(parseInt(flags, 8) & 3).toBe(fs.constants.O_RDONLY) // the access mode
    expect(tryInOtherProcess(p, true)).toBe('EWOULDBLOCK')
    expect(tryInOtherProcess(p, false)).toBe('taken')
    mine.release()
    expect(tryInOtherProcess(p, true)).toBe('taken')
  })
})

describe('lockFile: the file', () => {
  test('is created 0600 when missing, and kept after release', async () => {
    const p = path.join(dir, 'new.lock')
    const l = await lock(p)
    expect(fs.statSync(p).mode & 0o777).toBe(0o600)
    expect(fs.statSync(p).isFile()).toBe(true)
    expect(fdsOn(p)).toBe(1)
    l.release()
    expect(fdsOn(p)).toBe(0)
    expect(fs.existsSync(p)).toBe(true)
  })

  test('release twice is harmless; the lock can be taken again', async () => {
    const p = path.join(dir, 'lock')
    const l = await lockFile(p)
    l.release()
    expect(() => l.release()).not.toThrow()
    const again = await lock(p, { timeoutMs: 0 })
    expect(again.path).toBe(p)
  })

  test('a symlink is refused (ELOOP) and not followed', async () => {
    const target = path.join(dir, 'target')
    const link = path.join(dir, 'link')
    fs.symlinkSync(target, link) // dangling
    const e = await lockFile(link).then(() => undefined, (err) => err)
    expect(e.code).toBe('ELOOP')
    expect(e.syscall).toBe('open')
    expect(e.message).toBe(`ELOOP: ${link}: is not a regular file (a symbolic link); shmkeep locks only a regular file`)
    expect(fs.existsSync(target)).toBe(false) // O_CREAT did not create what the link points to

    fs.writeFileSync(target, '')
    await expect(lockFile(link, { timeoutMs: 0 })).rejects.toMatchObject({ code: 'ELOOP' })
    const t = await lock(target, { timeoutMs: 0 }) // the target was never locked
    expect(t.path).toBe(target)
  })

  test('a directory or a missing folder → an error with a code', async () => {
    await expect(lockFile(dir)).rejects.toMatchObject({ code: 'EISDIR', message: `EISDIR: ${dir}: is not a regular file (a directory); shmkeep locks only a regular file` })
    await expect(lockFile(dir, { readOnly: true })).rejects.toMatchObject({ code: 'EISDIR', message: `${dir}: is not a regular file (a directory); shmkeep locks only a regular file` })
    await expect(lockFile(path.join(dir, 'no', 'such'))).rejects.toMatchObject({ code: 'ENOENT' })
  })
})

describe('lockFile: bad arguments', () => {
  test('an unknown option → TypeError', async () => {
    const p = path.join(dir, 'lock')
    await expect(lockFile(p, { timeout: 5 } as never)).rejects.toThrow(TypeError)
    await expect(lockFile(p, null as never)).rejects.toThrow(TypeError)
    expect(fs.existsSync(p)).toBe(false)
  })

  // The issue: bad arguments throw TypeError / RangeError before any system
  // call — here: before open(2) creates the lock file. (timeoutMs: 'soon' used
  // to make the deadline a string, so the wait never ended under contention.)
  test('timeoutMs that is not a number → TypeError, before the file is touched', async () => {
    const p = path.join(dir, 'lock')
    for (const timeoutMs of ['soon', '100', null, {}]) {
      const got = await lockFile(p, { timeoutMs: timeoutMs as never }).then((l) => (l.release(), 'a lock'), (e) => e)
      expect(got, String(timeoutMs)).toBeInstanceOf(TypeError)
    }
    expect(fs.existsSync(p)).toBe(false)
  })

  test('exclusive that is not a boolean → TypeError before the file is touched', async () => {
    const p = path.join(dir, 'lock')
    const got = await lockFile(p, { exclusive: 'no' as never }).then((l) => (l.release(), 'a lock'), (e) => e)
    expect(got).toBeInstanceOf(TypeError)
    expect(fs.existsSync(p)).toBe(false)
  })

  test('timeoutMs NaN, fractional or negative → TypeError / RangeError (NaN would wait forever)', async () => {
    const p = path.join(dir, 'lock')
    for (const [timeoutMs, kind] of [[NaN, TypeError], [1.5, TypeError], [-1, RangeError]] as const) {
      const got = await lockFile(p, { timeoutMs }).then((l) => (l.release(), 'a lock'), (e) => e)
      expect(got, String(timeoutMs)).toBeInstanceOf(kind)
    }
    expect(fs.existsSync(p)).toBe(false)
  })

  test('signal that is not an AbortSignal → TypeError', async () => {
    const p = path.join(dir, 'lock')
    const got = await lockFile(p, { signal: {} as never }).then((l) => (l.release(), 'a lock'), (e) => e)
    expect(got).toBeInstanceOf(TypeError)
  })
})
