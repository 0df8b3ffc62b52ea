/**
 * Seeded fuzz of state files (issue 11): a state dir with two generations
 * (1-byte and 4 KiB packed segments, 3 MiB, 64 MiB sparse, 256 KiB created
 * by uid 1000 with mode 0600, a semaphore set, a message queue) is copied
 * and mutated — byte flips, truncation, extension, deletion, links out of
 * it (to intact copies, a FIFO, directories), directories and FIFOs in the
 * place of files, modes and owners, forged fields with a recomputed CRC —
 * and each copy is restored in an IPC namespace emptied for it, under
 * `strace -f -e trace=openat`. The oracle (test/fuzz/run.ts) accepts exactly
 * one generation's records (valid forgeries restore as forged), or a refusal
 * that leaves the namespace empty; anything else fails, with the seed and
 * case to replay it.
 *
 * SHMKEEP_FUZZ=N runs N cases (default 300), SHMKEEP_FUZZ_SEED the seed
 * (default: a new one each run, printed; under CI a fixed one),
 * SHMKEEP_FUZZ_CASE=ID[,ID…] those cases only.
 * Regressions (test/fuzz/regressions.ts) run every time.
 */
import crypto from 'node:crypto'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { regressions } from './fuzz/regressions'
import { build, escape, figures, fuzz, judge, parseTrace, type Built, type Verdict } from './fuzz/run'
import { have, realRoot, Workspace } from './snapkit'

const COUNT = Number(process.env.SHMKEEP_FUZZ || 300)
/** CI runs one fixed seed (a red CI must be the change's doing, and replayable); elsewhere each run explores a new one. */
const CI_SEED = 20261129
const SEED = process.env.SHMKEEP_FUZZ_SEED ? Number(process.env.SHMKEEP_FUZZ_SEED) : process.env.CI ? CI_SEED : crypto.randomInt(2 ** 31)
const ONLY = process.env.SHMKEEP_FUZZ_CASE ? process.env.SHMKEEP_FUZZ_CASE.split(',').map(Number) : undefined

const ws = new Workspace()
afterAll(() => ws.cleanup())

let built: Built
let verdicts: Verdict[]
let regressionVerdicts: Verdict[]
let seconds = 0

function replay(v: Verdict): string {
  return `case ${v.id} [${v.classes.join(', ')}]: ${v.outcome}: ${v.failure}\n  replay: SHMKEEP_FUZZ_SEED=${SEED} SHMKEEP_FUZZ_CASE=${v.id} npm test -- test/fuzz.test.ts`
}

describe('the oracle can fail', () => {
  test('an open through a link out of the state dir, in strace -f -y output (split by threads), is caught', () => {
    const trace = [
      '10 openat(AT_FDCWD</w>, "/nonexistent/shmkeep-fuzz-mark-7-start", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)',
      '10 openat(AT_FDCWD</w>, "/w/work/case-7/CURRENT", O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC) = 21</w/work/case-7/CURRENT>',
      '11 openat(AT_FDCWD</w>, "/w/work/case-7/gen-000000000002/a.data", O_RDONLY <unfinished ...>',
      '10 openat(AT_FDCWD</w>, "/etc/hosts", O_RDONLY) = 22</etc/hosts>',
      '11 <... openat resumed>) = 23</w/bait/state/gen-000000000002/a.data>',
      '10 openat(AT_FDCWD</w>, "/nonexistent/shmkeep-fuzz-mark-7-end", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)',
      '10 openat(AT_FDCWD</w>, "/w/bait/fifo", O_RDONLY) = 24</w/bait/fifo>',
    ].join('\n')
    const opens = parseTrace(trace)
    expect([...opens.keys()]).toEqual([7])
    expect(opens.get(7)).toHaveLength(3)
    expect(escape(opens.get(7)!, '/w/work/case-7', '/w/bait')).toMatch(/a\.data and got \/w\/bait\/state/)
    expect(escape(opens.get(7)!.slice(0, 2), '/w/work/case-7', '/w/bait')).toBeUndefined()
  })

  test('mixed generations, a coerced value, leftovers after a refusal and a silent empty restore are failures', () => {
    const obj = (key: string, hash: string, extra = {}) => ({ kind: 'shm' as const, key, id: 1, size: 1, mode: 0o600, uid: 0, gid: 0, cuid: 0, cgid: 0, hash, ...extra })
    const fake = { saved: { g1: [obj('0x1', 'a1'), obj('0x2', 'a2')], g2: [obj('0x1', 'b1'), obj('0x2', 'b2')] }, current: 'g2' } as unknown as Built
    const c = { id: 1, classes: [], ops: [], effects: [] }
    const result = (r: object) => ({ done: 1, objects: [], lineageQueues: 0, gens: ['g1', 'g2'], notes: [], logs: [], ms: 1, ...r }) as never
    expect(judge(c, result({ outcome: 'restored', generation: 'g2', objects: fake.saved.g2, lineageQueues: 1 }), fake).failure).toBeUndefined()
    expect(judge(c, result({ outcome: 'restored', generation: 'g2', objects: [obj('0x1', 'b1'), obj('0x2', 'a2')] }), fake).failure).toMatch(/other objects/)
    const forged = { ...c, effects: [{ gen: 'g2', kind: 'shm' as const, key: '0x1', id: 1, set: { uid: 1.5 } }] }
    expect(judge(forged, result({ outcome: 'restored', generation: 'g2', objects: [obj('0x1', 'b1', { uid: 1 }), obj('0x2', 'b2')] }), fake).failure).toMatch(/other objects/)
    expect(judge(c, result({ outcome: 'refused', message: 'restore failed', objects: [obj('0x1', 'b1')] }), fake).failure).toMatch(/left 1 object/)
    expect(judge(c, result({ outcome: 'refused', message: 'restore failed, nothing restored: Cannot read properties of null' }), fake).failure).toMatch(/crash/)
    expect(judge(c, result({ outcome: 'nothing' }), fake).failure).toMatch(/restored nothing although/)
  })
})

describe.skipIf(!realRoot || !have('strace'))('state file fuzz', () => {
  beforeAll(async () => {
    const started = Date.now()
    built = build(ws.dir, ws.pkg)
    const dir = path.join(ws.dir, 'runs')
    ;(await import('node:fs')).mkdirSync(dir)
    regressionVerdicts = await fuzz(built, dir, { seed: 0, count: 0, parallel: 2, cases: regressions })
    verdicts = await fuzz(built, dir, { seed: SEED, count: COUNT, parallel: 2, only: ONLY })
    seconds = (Date.now() - started) / 1000
    const f = figures(verdicts)
    console.log(`state file fuzz: seed ${SEED}, ${verdicts.length} cases in ${seconds.toFixed(0)} s (base built and regressions included)\n  classes: ${JSON.stringify(f.classes)}\n  outcomes: ${JSON.stringify(f.outcomes)}`)
    const notes = new Set(verdicts.filter((v) => v.note).map((v) => v.note!.replace(/\/\S*\/case-\d+/g, 'STATE')))
    if (notes.size) console.log(`  refusals that are system errors, not RestoreErrors:\n    ${[...notes].join('\n    ')}`)
  }, 900_000)

  test('the unmutated state dir restores CURRENT exactly (the oracle accepts what it must)', () => {
    const pristine = regressionVerdicts.find((v) => v.id === 0)!
    expect(pristine.failure).toBeUndefined()
    expect(pristine.outcome).toBe('restored CURRENT')
  })

  test('regressions: every mutation the fuzz once failed on is restored or refused cleanly', () => {
    const failed = regressionVerdicts.filter((v) => v.failure)
    expect(failed.map((v) => `regression ${v.id} [${v.classes.join(', ')}]: ${v.outcome}: ${v.failure}`).join('\n')).toBe('')
  })

  test(`seeded mutations (SHMKEEP_FUZZ, default 300): 0 failures`, () => {
    const failed = verdicts.filter((v) => v.failure)
    expect(failed.map(replay).join('\n'), `seed ${SEED}`).toBe('')
    expect(verdicts.length).toBe(ONLY?.length ?? COUNT)
    // The oracle has something to judge: both ways out happen.
    if (!ONLY) {
      expect(verdicts.some((v) => v.outcome.startsWith('restored'))).toBe(true)
      expect(verdicts.some((v) => v.outcome === 'refused')).toBe(true)
    }
  })
})
