/**
 * Progress of long work (src/progress.ts), driven by an injected clock: in a
 * log, nothing for a short operation, then one line every few seconds; on a
 * terminal, one line redrawn in place and erased at the end. The addon's job
 * token counts the bytes its workers finish, chunk by chunk (native/job.h),
 * and startProgress follows it (src/log.ts). And the CLI end to end:
 * snapshot, restore and verify of one segment, made slow on purpose, log
 * progress that moves within that segment.
 *
 * Segments here are IPC_PRIVATE or live in namespaces of their own.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import { lanesFor } from '../src/lanes'
import { startProgress, streamLogger, type Logger } from '../src/log'
import { DEFAULT_CHUNK_SIZE } from '../src/snapshot'
import { native, type CancelToken } from '../src/native'
import { Progress, describe as describeProgress } from '../src/progress'
import { canUnshare, dist, have, root, run } from './helpers'

const MiB = 2 ** 20

function logMode() {
  const lines: string[] = []
  let t = 1000
  const log = streamLogger({ write: (l) => lines.push(l) })
  const p = new Progress({ log, now: () => t, timer: false })
  return { lines, p, at: (ms: number) => (t = 1000 + ms) }
}

describe('in a log (not a terminal)', () => {
  test('an operation that ends within 2 s writes no progress line', () => {
    const { lines, p, at } = logMode()
    const h = p.start('snapshot', 100 * MiB)
    at(1900)
    h.advance(100 * MiB)
    p.tick()
    h.end()
    at(10_000)
    p.tick()
    expect(lines).toEqual([])
  })

  test('a long one: a line after 2 s, then one every 5 s, with bytes, rate and time left', () => {
    const { lines, p, at } = logMode()
    const h = p.start('restore', 4096 * MiB)
    at(1000)
    h.advance(512 * MiB)
    p.tick()
    expect(lines).toEqual([])
    at(2000)
    h.advance(512 * MiB)
    p.tick()
    expect(lines).toEqual(['shmkeep: restore: 1.0 GiB of 4.0 GiB (25%), 512.0 MiB/s, 6.0 s left\n'])
    at(4000)
    p.tick() // less than 5 s since the last line
    expect(lines).toHaveLength(1)
    at(7000)
    p.tick()
    expect(lines).toHaveLength(2)
    h.end()
    at(20_000)
    p.tick()
    expect(lines).toHaveLength(2)
  })

  test('before any byte is done: how long it has run, no rate', () => {
    expect(describeProgress({ name: 'verify gen-000000000001', total: 2 * MiB, bytes: 0, started: 0 }, 3000).message).toBe('verify gen-000000000001: 0 B of 2.0 MiB (0%), 3.0 s so far')
  })

  test('JSON lines carry the exact numbers', () => {
    const lines: string[] = []
    let t = 0
    const p = new Progress({ log: streamLogger({ format: 'json', write: (l) => lines.push(l) }), now: () => t, timer: false })
    const h = p.start('snapshot', 3 * MiB + 5)
    h.advance(MiB)
    t = 2000
    p.tick()
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: 'progress', operation: 'snapshot', bytes: MiB, total: 3 * MiB + 5, elapsedMs: 2000, bytesPerSecond: MiB / 2 })
  })
})

describe('on a terminal', () => {
  test('Progress with a terminal: draws after 300 ms, redraws with \\r, erases at the end and before a log line', () => {
    const out: string[] = []
    let t = 0
    const lines: string[] = []
    const p = new Progress({ log: streamLogger({ write: (l) => lines.push(l) }), terminal: { write: (s) => out.push(s), columns: 30 }, now: () => t, timer: false })
    const h = p.start('snapshot', 10 * MiB)
    t = 100
    p.tick()
    expect(out).toEqual([])
    h.advance(5 * MiB)
    t = 500
    p.tick()
    expect(out).toHaveLength(1)
    expect(out[0]!.startsWith('\r\x1b[Kshmkeep: snapshot: 5.0 MiB')).toBe(true)
    expect(out[0]!.length).toBe('\r\x1b[K'.length + 29) // cut to the terminal's width
    p.interrupt(() => out.push('shmkeep: a log line\n'))
    expect(out.slice(1)).toEqual(['\r\x1b[K', 'shmkeep: a log line\n'])
    t = 520
    p.tick() // redrawn at once after the interruption
    expect(out).toHaveLength(4)
    h.end()
    expect(out.at(-1)).toBe('\r\x1b[K')
    expect(lines).toEqual([]) // nothing went to the log
  })
})

describe('the job token counts bytes as the workers finish chunks', () => {
  const IPC_CREAT_0600 = 0o1600
  const PAGE = 4096
  const CHUNK = 16 * PAGE
  let dir: string
  const ids: number[] = []
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-progress-native-'))
  })
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  afterEach(() => {
    for (const id of ids.splice(0)) native.shmRemove(id, -1, -1)
  })

  /** An IPC_PRIVATE segment of `size` bytes, every page written with `fill`. */
  function segment(size: number, fill = 1): number {
    const id = native.shmGet(0, size, IPC_CREAT_0600, -1, -1)
    ids.push(id)
    const a = native.shmAttach(id, false, 0, -1, -1, -1, size)
    a.buffer.fill(fill)
    native.shmDetach(a.handle, a.buffer)
    return id
  }
  let n = 0
  const save = (id: number, cancel: CancelToken, more: object = {}) =>
    native.saveSegment({ id, uid: -1, gid: -1, path: path.join(dir, `seg-${n++}`), chunkSize: CHUNK, holes: 'read', fsync: false, cancel, ...more })

  // Lanes: the chunks of one job shared by threads that count at once (native/parallel.h).
  test.each([1, 3])('a save, a restore and a verify each count the segment once; one token sums the jobs given it (%i lane(s))', async (lanes) => {
    const size = 40 * CHUNK + 3 * PAGE // a short last chunk
    const id = segment(size)
    const token = native.cancelToken()
    expect(native.jobBytes(token)).toBe(0)
    const saved = await save(id, token, { lanes })
    expect(native.jobBytes(token)).toBe(size)
    const p = path.join(dir, `seg-${n - 1}`)
    const verifying = native.cancelToken()
    await native.verifyFile({ path: p, size, chunkSize: CHUNK, chunks: saved.chunks, lanes, cancel: verifying })
    expect(native.jobBytes(verifying)).toBe(size)
    // A sweep's share: only the chunks it reads.
    await native.verifyFile({ path: p, size, chunkSize: CHUNK, chunks: saved.chunks, first: 38, count: 5, lanes, cancel: verifying })
    expect(native.jobBytes(verifying)).toBe(size + 2 * CHUNK + 3 * PAGE)
    const target = native.shmGet(0, size, IPC_CREAT_0600, -1, -1)
    ids.push(target)
    const restoring = native.cancelToken()
    await native.restoreSegment({ id: target, uid: -1, gid: -1, path: p, size, chunkSize: CHUNK, chunks: saved.chunks, stopAtFirstBad: true, lanes, cancel: restoring })
    expect(native.jobBytes(restoring)).toBe(size)
    // Two saves on one token (a snapshot's concurrent segments): the sum.
    await Promise.all([save(id, token, { lanes }), save(segment(CHUNK), token, { lanes })])
    expect(native.jobBytes(token)).toBe(2 * size + CHUNK)
  })

  test.each([1, 3])('an incremental save that finds a change late counts the segment once, not its comparison and its copy (%i lane(s))', async (lanes) => {
    const size = 32 * CHUNK
    const id = segment(size)
    const first = await save(id, native.cancelToken())
    const previous = { chunks: first.chunks, hashes: first.hashes }
    const same = native.cancelToken()
    expect((await save(id, same, { previous, lanes })).unchanged).toBe(true)
    expect(native.jobBytes(same)).toBe(size)
    // The last chunk changes: the comparison reads 32 chunks, the copy 32 again.
    const a = native.shmAttach(id, false, 0, -1, -1, -1, size)
    a.buffer[size - 1] = 9
    native.shmDetach(a.handle, a.buffer)
    const changed = native.cancelToken()
    expect((await save(id, changed, { previous, lanes })).unchanged).toBe(false)
    expect(native.jobBytes(changed)).toBe(size)
  })

  test('savePacked counts each segment it went through', async () => {
    const sizes = [PAGE, 3 * PAGE + 100, 16 * PAGE]
    const segs = sizes.map((s) => segment(s))
    const token = native.cancelToken()
    const fd = fs.openSync(path.join(dir, 'pack'), 'w')
    try {
      await native.savePacked({ segments: segs.map((id, k) => ({ id, uid: -1, gid: -1, size: sizes[k]! })), fd, offset: 0, chunkSize: 2 * PAGE, holes: 'read', cancel: token })
    } finally {
      fs.closeSync(fd)
    }
    expect(native.jobBytes(token)).toBe(sizes.reduce((x, y) => x + y, 0))
  })

  test('jobBytes takes only a token', () => {
    expect(() => native.jobBytes({} as CancelToken)).toThrow(/expects a token from cancelToken/)
  })

  test.skipIf(!have('strace'))('within one segment: read while a verify runs, the count moves chunk by chunk (each pread slowed by strace)', () => {
    const file = path.join(dir, 'slow.dat')
    const chunks = 24
    const script = `
      const { native } = require(${JSON.stringify(path.join(root, 'dist', 'native.js'))})
      const fs = require('node:fs')
      const CHUNK = ${CHUNK}, size = ${chunks} * CHUNK
      fs.writeFileSync(${JSON.stringify(file)}, Buffer.alloc(size))
      const table = Buffer.alloc(${chunks} * 8)
      const zeroCrc = native.crc32c(Buffer.alloc(CHUNK))
      for (let i = 0; i < ${chunks}; i++) table.writeUInt32LE(zeroCrc, i * 8) // type 0: zero
      const token = native.cancelToken()
      const seen = []
      const timer = setInterval(() => seen.push(native.jobBytes(token)), 5)
      native.verifyFile({ path: ${JSON.stringify(file)}, size, chunkSize: CHUNK, chunks: table, cancel: token }).then((r) => {
        clearInterval(timer)
        console.log(JSON.stringify({ bad: r.badChunks.length, seen, end: native.jobBytes(token), size }))
      })`
    // 40 ms before each pread: about a second in all, many samples between two chunks.
    const r = run('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=pread64', '-e', 'inject=pread64:delay_enter=40000', process.execPath, '-e', script])
    expect(r.status, r.stderr).toBe(0)
    const { bad, seen, end, size } = r.json as { bad: number; seen: number[]; end: number; size: number }
    expect(bad).toBe(0)
    expect(end).toBe(size)
    expect(seen.some((b) => b > 0 && b < size), JSON.stringify(seen)).toBe(true)
    expect(seen.every((b, i) => b % CHUNK === 0 && (i === 0 || b >= seen[i - 1]!))).toBe(true)
  })
})

describe('startProgress follows a counter', () => {
  afterEach(() => vi.useRealTimers())

  function recording(): { log: Logger; heard: number[]; ended: () => boolean } {
    const heard: number[] = []
    let done = false
    return { log: { log() {}, progress: () => ({ advance: (b) => heard.push(b), end: () => (done = true) }) }, heard, ended: () => done }
  }

  test('the logger hears the counter as it moves, the larger of it and what was advanced, never past the total, and nothing after end', () => {
    vi.useFakeTimers()
    const { log, heard, ended } = recording()
    const p = startProgress(log, 'restore', 100)
    let counter = 0
    p.follow(() => counter)
    counter = 30
    vi.advanceTimersByTime(300)
    expect(heard).toEqual([30])
    p.advance(50) // a segment of 50 finished: ahead of the counter
    expect(heard).toEqual([30, 20])
    counter = 60
    vi.advanceTimersByTime(300)
    expect(heard).toEqual([30, 20, 10])
    counter = 150 // a worker went over bytes twice (a sweep): shown as the total at most
    vi.advanceTimersByTime(300)
    expect(heard).toEqual([30, 20, 10, 40])
    expect(heard.reduce((a, b) => a + b)).toBe(100)
    p.end()
    expect(ended()).toBe(true)
    expect(vi.getTimerCount()).toBe(0)
  })

  test('without a progress method, nothing is read and no timer runs', () => {
    vi.useFakeTimers()
    const p = startProgress({ log() {} }, 'verify', 100)
    p.follow(() => {
      throw new Error('read')
    })
    expect(vi.getTimerCount()).toBe(0)
    p.end()
  })
})

describe.concurrent('the CLI, one segment made slow on purpose', () => {
  const MiB64 = 64 * MiB
  let top: string
  const unshareOk = canUnshare('--ipc')
  beforeAll(() => {
    top = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-progress-cli-'))
  })
  afterAll(() => fs.rmSync(top, { recursive: true, force: true }))

  /** Node code that makes one segment of 64 MiB, every byte 7 (in the namespace it runs in). */
  const makeSegment = `const { shm } = require(${JSON.stringify(dist)}); const id = shm.get(0x70726f10, { size: ${MiB64}, create: true, mode: 0o600 }); const b = shm.attach(id); b.fill(7); shm.detach(b)`
  const shmkeep = [process.execPath, path.join(root, 'bin', 'shmkeep.js')]

  /** A saved generation of that segment, made without delays (in a namespace of its own). */
  function saved(): string {
    const state = path.join(top, 'saved')
    if (fs.existsSync(state)) return state
    fs.mkdirSync(state)
    const r = run('unshare', ['--ipc', 'sh', '-c', `"$0" -e '${makeSegment}' && "$0" "$1" snapshot -q -s "$2"`, shmkeep[0]!, shmkeep[1]!, state])
    expect(r.status, r.stderr).toBe(0)
    return state
  }

  /** Run a command under strace, every call of `syscall` delayed by `delayUs` (0: none); stderr's JSON lines and how many calls it made. */
  async function traced(syscall: string, delayUs: number, argv: string[]): Promise<{ status: number | null; lines: Array<Record<string, any>>; stderr: string; calls: number }> {
    const trace = path.join(top, `strace-${Math.random().toString(36).slice(2)}`)
    const inject = delayUs > 0 ? ['-e', `inject=${syscall}:delay_enter=${delayUs}`] : []
    const child = spawn('strace', ['-f', '-qq', '-o', trace, '-e', `trace=${syscall}`, ...inject, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve))
    const lines = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>)
    const calls = fs.readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes(`${syscall}(`)).length
    return { status, lines, stderr, calls }
  }

  /**
   * Run `argv` once as it is, counting its calls of `syscall` (the copy path's
   * reads or writes), then again with about 9.5 s of delays spread over those
   * calls: past a progress line at 2 s and one at 7 s, whatever sizes of I/O
   * the copy path uses. `argv` is asked for each run ('fast', 'slow').
   * `threads`: how many threads make those calls at once (a restore's or
   * verify's lanes, src/lanes.ts: their delays overlap).
   */
  async function slowed(syscall: string, argv: (run: string) => string[], threads = 1): Promise<Awaited<ReturnType<typeof traced>>> {
    const fast = await traced(syscall, 0, argv('fast'))
    expect(fast.status, fast.stderr).toBe(0)
    expect(fast.calls).toBeGreaterThan(0)
    return traced(syscall, Math.ceil((threads * 9_500_000) / fast.calls), argv('slow'))
  }

  /**
   * At least two progress events, all before the end event (verify logs
   * none), bytes never going back, and at least one inside the one segment
   * (0 < bytes < its size: a per-segment count shows only 0 until the end).
   * The first event may come before any byte is done (a loaded machine can
   * spend the first 2 s starting the process and checking the state dir).
   */
  function expectProgress(r: Awaited<ReturnType<typeof traced>>, operation: string | RegExp, endEvent?: string): void {
    expect(r.status, r.stderr).toBe(0)
    const events = r.lines.map((l) => l.event)
    const progress = r.lines.filter((l) => l.event === 'progress')
    expect(progress.length, `${r.calls} delayed calls; ${r.stderr}`).toBeGreaterThanOrEqual(2)
    for (const p of progress) {
      expect(p.operation).toMatch(operation)
      expect(p).toMatchObject({ total: MiB64 })
      expect(p.bytes).toBeGreaterThanOrEqual(0)
      expect(p.bytes).toBeLessThanOrEqual(MiB64)
    }
    expect(progress.every((p, i) => i === 0 || p.bytes >= progress[i - 1]!.bytes), JSON.stringify(progress)).toBe(true)
    expect(progress.some((p) => p.bytes > 0 && p.bytes < MiB64), JSON.stringify(progress)).toBe(true)
    if (endEvent) expect(events.lastIndexOf('progress')).toBeLessThan(events.indexOf(endEvent))
  }

  test.skipIf(!have('strace') || !unshareOk)('snapshot', async () => {
    const r = await slowed('pwrite64', (name) => {
      const state = path.join(top, `snapshot-${name}`)
      fs.mkdirSync(state)
      return ['unshare', '--ipc', 'sh', '-c', `"$0" -e '${makeSegment}' && "$0" "$1" snapshot -s "$2" --log-format json`, shmkeep[0]!, shmkeep[1]!, state]
    })
    expectProgress(r, 'snapshot', 'snapshot')
  })

  test.skipIf(!have('strace') || !unshareOk)('restore', async () => {
    const r = await slowed('pread64', () => ['unshare', '--ipc', ...shmkeep, 'restore', '-s', saved(), '--log-format', 'json'], lanesFor(MiB64, DEFAULT_CHUNK_SIZE))
    expectProgress(r, 'restore', 'restore')
  })

  test.skipIf(!have('strace') || !unshareOk)('verify', async () => {
    const r = await slowed('pread64', () => [...shmkeep, 'verify', '-s', saved(), '--log-format', 'json'], lanesFor(MiB64, DEFAULT_CHUNK_SIZE))
    expectProgress(r, /^verify gen-/)
  })

  test.skipIf(!have('strace') || !unshareOk)('verify of three segments in text: a line for people on a stderr that is not a terminal', async () => {
    const state = path.join(top, 'three')
    fs.mkdirSync(state)
    const script = `
      const { shm, snapshot } = require(${JSON.stringify(dist)})
      ;(async () => {
        for (let i = 0; i < 3; i++) {
          const id = shm.get(0x70726f00 + i, { size: 8 << 20, create: true, mode: 0o600 })
          const b = shm.attach(id); b.fill(1 + i); shm.detach(b)
        }
        await snapshot({ stateDir: ${JSON.stringify(state)} })
      })()`
    const made = run('unshare', ['--ipc', process.execPath, '-e', script])
    expect(made.status, made.stderr).toBe(0)
    // Each pread64 waits 50 ms: about 100 of them, far past the 2 s before a first line.
    const r = await traced('pread64', 50_000, [...shmkeep, 'verify', '-s', state])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/^shmkeep: verify gen-000000000001: [\d.]+ [KMG]?i?B of 24\.0 MiB \(\d+%\), /m)
  })
})
