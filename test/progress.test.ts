/**
 * Progress of long work (src/progress.ts), driven by an injected clock: in a
 * log, nothing for a short operation, then one line every few seconds; on a
 * terminal, one line redrawn in place and erased at the end. And the CLI end
 * to end: a verify made slow on purpose logs at least one progress line.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { streamLogger } from '../src/log'
import { Progress, describe as describeProgress } from '../src/progress'
import { have, root, run } from './helpers'

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

describe('the CLI', () => {
  const dirs: string[] = []
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  })

  test.skipIf(!have('strace'))('verify made slow on purpose (every pread delayed by strace) logs at least one progress line; stderr is not a terminal', () => {
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-progress-'))
    dirs.push(state)
    const script = `
      const { shm, snapshot } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
      ;(async () => {
        const ids = []
        for (let i = 0; i < 3; i++) {
          const id = shm.get(0x70726f00 + i, { size: 8 << 20, create: true, mode: 0o600 })
          const b = shm.attach(id); b.fill(1 + i); shm.detach(b); ids.push(id)
        }
        try { await snapshot({ stateDir: ${JSON.stringify(state)} }) } finally { for (const id of ids) shm.remove(id) }
      })()`
    const made = run(process.execPath, ['-e', script])
    expect(made.status, made.stderr).toBe(0)
    // Each pread64 waits 50 ms: about 100 of them (the chunks' pieces), far past the 2 s before a first line.
    const r = run('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=pread64', '-e', 'inject=pread64:delay_enter=50000', process.execPath, path.join(root, 'bin', 'shmkeep.js'), 'verify', '-s', state])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toBe('gen-000000000001: ok\n')
    expect(r.stderr).toMatch(/^shmkeep: verify gen-000000000001: [\d.]+ [KMG]?i?B of 24\.0 MiB \(\d+%\), /m)
  })
})
