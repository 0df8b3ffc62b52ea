/**
 * The snapshot's decisions as pure functions: whether CURRENT may move
 * (decideSide), how the image was taken (decideConsistency), which copied
 * segments are dropped as vanished (dropVanished), the outcome and its exit
 * codes (src/outcome.ts), and which generations a prune keeps.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { RUN_SNAPSHOT_EXIT, SNAPSHOT_EXIT, snapshotOutcome } from '../src/outcome'
import { decideConsistency, dropVanished } from '../src/snapshot'
import { encodeCheckedJson } from '../src/state/files'
import { FORMAT, generationName, type GenerationRecord } from '../src/state/format'
import { prune } from '../src/state/prune'
import { decideSide } from '../src/state/side'
import { StateDir } from '../src/state/statedir'
import { tempDir } from './helpers'

describe('decideSide', () => {
  const known = { known: true } as const
  const base = { asked: false, force: false, current: { name: 'gen-000000000002' }, currentSegments: 3, parent: 'gen-000000000002', lineage: known as { known: true } | { known: false; why: string } }
  test('CURRENT moves along its own line', () => {
    expect(decideSide(base)).toEqual({ side: false })
    expect(decideSide({ ...base, current: { name: null }, currentSegments: 0, parent: null })).toEqual({ side: false })
  })
  test('asked: beside, even with --force', () => {
    expect(decideSide({ ...base, asked: true })).toMatchObject({ side: true, reason: 'asked to write beside CURRENT' })
    expect(decideSide({ ...base, asked: true, force: true })).toMatchObject({ side: true })
  })
  test('another writer moved CURRENT: beside, unless forced', () => {
    const other = { ...base, parent: 'gen-000000000001' }
    expect(decideSide(other)).toMatchObject({ side: true, reason: expect.stringMatching(/CURRENT names gen-000000000002, not this state's parent \(gen-000000000001\)/) })
    expect(decideSide({ ...other, parent: null })).toMatchObject({ side: true, reason: expect.stringMatching(/not restored from this state dir/) })
    expect(decideSide({ ...other, force: true })).toEqual({ side: false })
  })
  test('lineage unknown while CURRENT exists: beside, saying why, unless forced; a first snapshot ever becomes CURRENT', () => {
    const unknown = { ...base, parent: null, lineage: { known: false as const, why: 'no lineage record in this IPC namespace' } }
    expect(decideSide(unknown)).toMatchObject({ side: true, reason: expect.stringMatching(/^lineage unknown: no lineage record in this IPC namespace; CURRENT \(gen-000000000002\) holds 3/) })
    expect(decideSide({ ...unknown, force: true })).toEqual({ side: false })
    expect(decideSide({ ...unknown, current: { name: null }, currentSegments: 0 })).toEqual({ side: false })
  })
  test('known lineage: the generation becomes CURRENT whatever it holds (an app that removed its segments at a clean stop decided so)', () => {
    expect(decideSide(base)).toEqual({ side: false }) // there is no "saving" input any more: emptiness never decides
  })
  test('an unreadable CURRENT: beside, unless forced', () => {
    expect(decideSide({ ...base, current: { error: 'garbage' } })).toMatchObject({ side: true, reason: 'CURRENT is unreadable (garbage)' })
    expect(decideSide({ ...base, current: { error: 'garbage' }, force: true })).toEqual({ side: false })
  })
})

describe('decideConsistency', () => {
  const none = new Set<number>()
  test('stopped: no attacher before or after the copy; shmkeep\'s own pins do not count', () => {
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 0, nattchAfter: 0 }], pinned: none })).toBe('stopped')
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 1, nattchAfter: 1 }], pinned: new Set([1]) })).toBe('stopped')
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [], pinned: none })).toBe('stopped')
  })
  test('live: an attacher before, or one that came during the copy, or one the caller named', () => {
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 1, nattchAfter: 0 }], pinned: none })).toBe('live')
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 0, nattchAfter: 1 }], pinned: none })).toBe('live')
    expect(decideConsistency({ frozen: false, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 2, nattchAfter: 2 }], pinned: new Set([1]) })).toBe('live')
    expect(decideConsistency({ frozen: false, knownAttachers: 1, segments: [], pinned: none })).toBe('live')
  })
  test('frozen: the app was frozen for the copy', () => {
    expect(decideConsistency({ frozen: true, knownAttachers: 0, segments: [{ id: 1, nattchBefore: 3, nattchAfter: 3 }], pinned: none })).toBe('frozen')
  })
})

describe('dropVanished', () => {
  const r = (id: number, key: number, ctime = 100, size = 4096) => ({ seg: { key, size, ctime }, outcome: { status: 'saved' as 'saved' | 'vanished' | 'unsaved', key: `0x${key.toString(16).padStart(8, '0')}`, id, reason: undefined as string | undefined } })
  test('gone, SHM_DEST (the kernel makes its key private) or another segment under the id: vanished; the rest saved', () => {
    const rs = [r(1, 0x10), r(2, 0x20), r(3, 0x30), r(4, 0x40)]
    dropVanished(rs, [
      { id: 1, key: 0x10, size: 4096, dest: false },
      { id: 3, key: 0, size: 4096, dest: true },
      { id: 4, key: 0x41, size: 4096, dest: false },
    ])
    expect(rs.map((x) => [x.outcome.id, x.outcome.status])).toEqual([
      [1, 'saved'],
      [2, 'vanished'],
      [3, 'vanished'],
      [4, 'vanished'],
    ])
    expect(rs[2]!.outcome.reason).toMatch(/IPC_RMID/)
  })
  test('never two records for one key: the newer segment stays', () => {
    const rs = [r(5, 0x50, 200), r(2, 0x50, 100), r(7, 0, 1), r(8, 0, 1)]
    dropVanished(rs, rs.map((x) => ({ id: x.outcome.id, key: x.seg.key, size: 4096, dest: false })))
    expect(rs.map((x) => [x.outcome.id, x.outcome.status])).toEqual([
      [5, 'saved'],
      [2, 'vanished'],
      [7, 'saved'], // IPC_PRIVATE segments are told apart by id
      [8, 'saved'],
    ])
  })
  test('unsaved and vanished results are left as they are', () => {
    const rs = [r(1, 0x10)]
    rs[0]!.outcome.status = 'unsaved'
    dropVanished(rs, [])
    expect(rs[0]!.outcome.status).toBe('unsaved')
  })
})

describe('the exit-code table', () => {
  const r = { generation: 'gen-000000000001', current: true, side: false, durable: true, unsaved: [] as unknown[] }
  test('each outcome and its codes', () => {
    const cases: Array<[typeof r, string, number, number | 'app']> = [
      [r, 'saved', 0, 'app'],
      [{ ...r, generation: null, current: false }, 'failed', 1, 124],
      [{ ...r, current: false, side: true }, 'side', 3, 123],
      [{ ...r, unsaved: [{}] }, 'partial', 4, 123],
      [{ ...r, durable: false }, 'undurable', 5, 123],
      [{ ...r, durable: false, unsaved: [{}] }, 'undurable', 5, 123],
      [{ ...r, current: false, side: true, unsaved: [{}] }, 'side', 3, 123],
      [{ ...r, current: false }, 'failed', 1, 124],
    ]
    for (const [input, outcome, snap, run] of cases) {
      const o = snapshotOutcome(input)
      expect(o, JSON.stringify(input)).toBe(outcome)
      expect(SNAPSHOT_EXIT[o]).toBe(snap)
      expect(RUN_SNAPSHOT_EXIT[o]).toBe(run)
    }
  })
})

describe('prune', () => {
  const t = tempDir()
  afterAll(() => t.cleanup())
  let n = 0
  /** A state dir with generations described by flags, oldest first; CURRENT names the last. */
  function stateWith(gens: Array<{ partial?: boolean; side?: boolean; data?: string }>): StateDir {
    const dir = path.join(t.dir, `s${++n}`)
    const state = StateDir.open(dir, { create: true })
    gens.forEach((g, i) => {
      const name = generationName(i + 1)
      fs.mkdirSync(state.path(name), { mode: 0o700 })
      const record: GenerationRecord = {
        format: FORMAT,
        tool: 'shmkeep',
        toolVersion: '0',
        name,
        seq: i + 1,
        parent: null,
        createdAt: new Date(0).toISOString(),
        hostname: 'h',
        kernel: 'k',
        reason: 'manual',
        clean: false,
        side: g.side ?? false,
        consistency: 'stopped',
        ...(g.partial ? { unsaved: [{ key: '0x00000001', id: 1, size: 4096, mode: 0, uid: 0, gid: 0, cuid: 0, cgid: 0, errno: 'EACCES', reason: 'r', remedy: 'm' }] } : {}),
        bytes: 0,
        bytesWritten: 0,
        durationMs: { total: 0, copy: 0 },
        segments: g.data ? [{ key: '0x00000001', id: 1, size: 4096, meta: '00000001-1.meta', data: '00000001-1.data' }] : [],
      }
      fs.writeFileSync(state.path(name, 'GENERATION'), encodeCheckedJson(FORMAT, record))
      // The same `data` tag: one inode (a hard link, as an unchanged segment's file is shared).
      if (g.data) {
        const first = gens.findIndex((x) => x.data === g.data)
        if (first === i) fs.writeFileSync(state.path(name, '00000001-1.data'), g.data)
        else fs.linkSync(state.path(generationName(first + 1), '00000001-1.data'), state.path(name, '00000001-1.data'))
      }
    })
    state.writeCurrent(generationName(gens.length))
    return state
  }
  const names = (state: StateDir) => state.generations().map((g) => g.seq)

  test('the newest `keep` complete generations stay; partial ones never push them out', () => {
    const s = stateWith([{}, {}, {}, { partial: true }, { partial: true }])
    const r = prune(s, { keep: 2 })
    expect(names(s)).toEqual([2, 3, 4, 5])
    expect(r.removed).toEqual([generationName(1)])
  })
  test('a partial generation older than the newest `keep` complete ones goes', () => {
    const s = stateWith([{ partial: true }, {}, {}, {}])
    prune(s, { keep: 2 })
    expect(names(s)).toEqual([3, 4])
  })
  test('side generations are counted apart, partial ones there too', () => {
    const s = stateWith([{ side: true, data: 'a' }, { side: true, partial: true, data: 'a' }, { side: true, data: 'a' }, { data: 'b' }, { data: 'b' }])
    prune(s, { keep: 1 })
    expect(names(s)).toEqual([3, 5])
  })
  test('the newest generation that shares no data file with CURRENT stays besides the newest `keep`', () => {
    const s = stateWith([{ data: 'a' }, { data: 'b' }, { data: 'c' }, { data: 'c' }, { data: 'c' }])
    const r = prune(s, { keep: 1 })
    expect(names(s)).toEqual([2, 5])
    expect(r.kept).toContainEqual({ name: generationName(2), why: expect.stringMatching(/shares no data file with CURRENT/) })
  })
})
