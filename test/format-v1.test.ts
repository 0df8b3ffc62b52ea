/**
 * Format 1 state dirs (written by shmkeep 0.1, before format 2) restore:
 * test/fixtures/state-v1/ was written by the format 1 code (see its
 * README). A restore in a new namespace gives back the exact bytes; the
 * generations read as format 2 (`inconsistent` → consistency `live`, else
 * `unknown`); a snapshot on top writes format 2 and continues the line.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { root } from './helpers'
import { contents, parseSums, readChecked, realRoot, Workspace } from './snapkit'

const ws = new Workspace()
afterAll(() => ws.cleanup())
const FIXTURE = path.join(root, 'test', 'fixtures', 'state-v1')

/** A private copy of the fixture, with the modes shmkeep gives its files (git keeps 0644/0755). */
function copyFixture(name: string): string {
  const dir = ws.state(name)
  fs.cpSync(path.join(FIXTURE, 'state'), dir, { recursive: true })
  const walk = (d: string) => {
    fs.chmodSync(d, 0o700)
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name))
      else fs.chmodSync(path.join(d, e.name), 0o600)
    }
  }
  walk(dir)
  return dir
}

describe.skipIf(!realRoot)('a format 1 state dir', () => {
  test('restores exactly; its generations read as format 2 (live / unknown); a snapshot on top writes format 2 and restores', () => {
    const S = copyFixture('v1')
    expect(readChecked(path.join(S, 'gen-000000000002', 'GENERATION')).format).toBe(1)
    ws.ns(`
      step gens shmkeep generations -s "$S" --json --verify
      step restore shmkeep restore -s "$S"
      sums restored
      step snap shmkeep snapshot -s "$S" --json
      inns 'step again shmkeep restore -s "$S"; sums again'
    `, { env: { S } })
    const gens = ws.step('gens')
    expect(gens.rc, gens.err).toBe(0)
    expect(gens.json.generations.map((g: any) => [g.name, g.current, g.consistency, g.verified])).toEqual([
      ['gen-000000000001', false, 'unknown', true],
      ['gen-000000000002', true, 'live', true],
    ])
    const restore = ws.step('restore')
    expect(restore.rc, restore.err).toBe(0)
    expect(restore.err).toMatch(/gen-000000000002 was taken while processes were attached to its segments \(live\): every chunk verifies, but the image may be torn/)
    const expected = parseSums(fs.readFileSync(path.join(FIXTURE, 'expected.sums'), 'utf8'))
    expect(contents(ws.sums('restored'))).toEqual(contents(expected))
    const snap = ws.step('snap')
    expect(snap.rc, snap.err).toBe(0)
    expect(snap.json).toMatchObject({ generation: 'gen-000000000003', parent: 'gen-000000000002', current: true, outcome: 'saved' })
    // Unchanged since the format 1 generation (its hashes read): shared, nothing written;
    // the 8 KiB one is packed into pack.data now (written again, a few KiB).
    expect(snap.json.segments.map((s: any) => [s.key, s.unchanged ?? false])).toEqual([
      ['0x00005101', false],
      ['0x00005102', true],
      ['0x00005103', true],
    ])
    const g3 = readChecked(path.join(S, 'gen-000000000003', 'GENERATION'))
    expect(g3.format).toBe(2)
    expect(g3.value.consistency).toBe('stopped')
    expect(ws.step('again').rc, ws.step('again').err).toBe(0)
    expect(contents(ws.sums('again'))).toEqual(contents(expected))
  })
})
