/**
 * A generation abandoned while its files are fsynced (issue 10: a TERM that
 * lands after a checkpoint's copy, while its gigabytes are written back).
 * The fsyncs cannot be interrupted; the commit must not wait for them: it
 * rejects with the abort's reason at once, the files whose fsync is in flight
 * are truncated (their pages not yet sent to the disk dropped) and closed
 * only once their fsync returned, and abandon() leaves nothing behind.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, expect, test } from 'vitest'
import type { GenerationRecord } from '../src/state/format'
import { StateDir } from '../src/state/statedir'
import { GenerationWriter } from '../src/state/writer'
import { tempDir } from './helpers'

let dir: string
let cleanup: () => void
beforeEach(() => ({ dir, cleanup } = tempDir()))
afterEach(() => cleanup())

const MiB = 1 << 20

test('an abort while the data files are fsynced: commit rejects at once (their fsyncs still in flight), nothing is renamed, the files are truncated before they are closed, abandon leaves no temporary directory', async () => {
  const state = StateDir.open(path.join(dir, 'state'), { create: true })
  const writer = GenerationWriter.begin(state)
  const piece = Buffer.alloc(8 * MiB, 0x5a)
  const outside: string[] = []
  for (const name of ['a.data', 'b.data']) {
    const fd = writer.create(name)
    for (let i = 0; i < 16; i++) fs.writeSync(fd, piece) // 128 MiB each, in the page cache
    // A second name outside the generation, to see what becomes of the file.
    const keep = path.join(dir, `kept-${name}`)
    fs.linkSync(writer.path(name), keep)
    outside.push(keep)
  }
  const ac = new AbortController()
  const committing = writer.commit({} as GenerationRecord, ac.signal)
  // The fsyncs were handed to the thread pool as commit() began; none can
  // have returned before this line (their callbacks need the event loop).
  ac.abort('SIGTERM')
  await expect(committing).rejects.toBe('SIGTERM')
  const inFlight = (writer as unknown as { syncing: Map<number, unknown> }).syncing.size
  expect(inFlight, 'fsyncs still in flight when the commit gave up').toBe(2)
  expect(writer.state).toBe('writing')
  writer.abandon()
  expect(writer.state).toBe('abandoned')
  expect(fs.readdirSync(state.dir).filter((n) => n.includes('gen-'))).toEqual([])
  // Once the fsyncs return, each file is truncated, then closed.
  const end = Date.now() + 120_000
  while ((writer as unknown as { syncing: Map<number, unknown> }).syncing.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
  for (const keep of outside) {
    let size = fs.statSync(keep).size
    while (size !== 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 10))
      size = fs.statSync(keep).size
    }
    expect(size, `${keep}: truncated`).toBe(0)
  }
}, 180_000)

test('without an abort the same commit completes: every file fsynced, GENERATION written, renamed into place', async () => {
  const state = StateDir.open(path.join(dir, 'state'), { create: true })
  const writer = GenerationWriter.begin(state)
  fs.writeSync(writer.create('a.data'), Buffer.alloc(MiB, 1))
  const ac = new AbortController()
  await writer.commit({ name: writer.name, segments: [] } as unknown as GenerationRecord, ac.signal)
  expect(writer.state).toBe('renamed')
  expect(fs.readdirSync(state.path(writer.name)).sort()).toEqual(['GENERATION', 'a.data'])
  expect(fs.statSync(state.path(writer.name, 'a.data')).size).toBe(MiB)
})
