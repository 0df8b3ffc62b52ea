/**
 * An abort during a big segment's restore stops the copy within a chunk
 * (issue 10/14): the signal reaches the native worker as a cancel token, so
 * the restore does not read the rest of the segment first, and it is undone
 * (nothing left in the namespace, RestoreError "interrupted").
 *
 * The restoring child runs under strace, which slows each read of the data
 * file (100 ms) and logs them: the abort comes 250 ms after the segment exists
 * (so the copy has begun: an abort before the first read would read nothing), and
 * the reads after it are counted — without the token all 32 chunks are read.
 * Keys of this file: 0x7500xxxx (in a namespace of its own).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { dist, have, run } from './helpers'

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-cancel-'))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))
const CHUNKS = 32

describe.skipIf(!have('strace'))('restore() aborted mid-segment', () => {
  test(`a ${CHUNKS}-chunk segment: the abort stops the copy after a few chunks, and the restore is undone`, () => {
    const S = path.join(scratch, 'state')
    const save = `
      const l = require(${JSON.stringify(dist)})
      const id = l.shm.get(0x75000001, { size: ${CHUNKS} << 20, create: true })
      const b = l.shm.attach(id)
      for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
      l.shm.detach(b)
      l.snapshot({ stateDir: ${JSON.stringify(S)}, chunkSize: 1 << 20 }).then((r) => console.log(JSON.stringify({ generation: r.generation, data: r.segments[0].dataFile ?? null })))
    `
    const saved = run('unshare', ['--ipc', process.execPath, '-e', save])
    expect(saved.status, saved.stderr).toBe(0)
    const gen = path.join(S, 'gen-000000000001')
    const data = fs.readdirSync(gen).find((f) => f.endsWith('.data') && f !== 'pack.data')
    expect(data, fs.readdirSync(gen).join(' ')).toBeDefined()
    const file = path.join(gen, data!)

    const restorer = `
      const l = require(${JSON.stringify(dist)})
      const ac = new AbortController()
      // Once the segment exists, let the copy begin (each read takes 100 ms under strace), then abort.
      const poll = setInterval(() => { if (l.shm.list().length) { clearInterval(poll); setTimeout(() => ac.abort('SIGTERM'), 250) } }, 5)
      l.restore({ stateDir: ${JSON.stringify(S)}, signal: ac.signal }).then(
        () => console.log(JSON.stringify({ restored: true })),
        (e) => console.log(JSON.stringify({ name: e.constructor.name, message: e.message, left: l.shm.list().length })),
      )
    `
    const trace = path.join(scratch, 'reads.trace')
    const r = run('unshare', ['--ipc', 'strace', '-f', '-qq', '-o', trace, '-P', file, '-e', 'trace=pread64,read,preadv,preadv2', '-e', 'inject=pread64,read,preadv,preadv2:delay_enter=100000', process.execPath, '-e', restorer], { timeout: 120_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toMatchObject({ name: 'RestoreError', left: 0 })
    expect(r.json.message).toMatch(/interrupted by SIGTERM: undone, nothing restored/)
    const reads = fs.readFileSync(trace, 'utf8').split('\n').filter((l) => /\b(pread64|read|preadv2?)\(/.test(l) && !/resumed/.test(l))
    // Chunk reads made: the copy stopped long before the end of the segment.
    expect(reads.length).toBeGreaterThan(0)
    expect(reads.length).toBeLessThan(CHUNKS / 2)
  })
})
