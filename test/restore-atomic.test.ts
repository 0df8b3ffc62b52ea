/**
 * Restore is all or nothing to its last step (issue 11, "The last steps are
 * inside all-or-nothing"): a failure after the first segment was created —
 * recording progress in RESTORING, removing it, switching CURRENT after a fallback, a
 * TERM — removes every segment; every field of a record is checked before
 * any system call; an I/O error that is not proof of damage (EIO) fails the
 * restore without quarantining anything; a CURRENT naming a missing
 * generation is damage, never "a first start".
 *
 * Faults are injected with strace (-P limits them to one file of the state
 * dir). Each case runs in an IPC namespace of its own and prints the keys of
 * the segments left there.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { encodeCheckedJson } from '../src/state/files'
import { binDir, root, run, type ChildResult } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-atomic-'))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

const G1 = 'gen-000000000001'
const G2 = 'gen-000000000002'
/** gen-2's files (the segment's id differs from gen-1's: it was created again). */
let DATA: string
let META: string

let n = 0
function copy(from: string, name: string): string {
  const d = path.join(scratch, `${name}-${++n}`)
  fs.cpSync(from, d, { recursive: true })
  return d
}

/** A script in a fresh IPC namespace: `sk` is the CLI, `segs` prints the keys left, `st` runs a command under strace. */
function ns(script: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): ChildResult {
  const prelude = [
    `sk() { "${process.execPath}" "${bin}" "$@"; }`,
    `mkseg() { "${path.join(binDir, 'mkseg')}" "$@" >/dev/null; }`,
    `segs() { echo "segs=$(ipcs -m | awk '/^0x/{printf "%s,", $1}')"; }`,
  ].join('\n')
  return run('unshare', ['--ipc', 'sh', '-c', `${prelude}\n${script}`], { env: { ...process.env, ...env }, timeout: timeoutMs })
}

/** gen-1 and gen-2 of one 8 MiB segment at 0x7200, each with its own bytes (no data file shared). */
let pristine: string
beforeAll(() => {
  pristine = path.join(scratch, 'pristine')
  fs.mkdirSync(pristine, { mode: 0o700 })
  const r = ns(
    `mkseg -s 1 0x7200 8388608 0600 pat && sk snapshot -q -s "$S" && ipcrm -M 0x7200 && mkseg -s 2 0x7200 8388608 0640 pat && sk snapshot -q --force -s "$S"`,
    { S: pristine },
  )
  expect(r.status, r.stderr).toBe(0)
  expect(fs.readFileSync(path.join(pristine, 'CURRENT'), 'utf8')).toBe(`${G2}\n`)
  DATA = fs.readdirSync(path.join(pristine, G2)).find((f) => f.endsWith('.data'))!
  META = DATA.replace(/\.data$/, '.meta')
  expect(fs.statSync(path.join(pristine, G2, DATA)).nlink).toBe(1)
})

const strace = (file: string, inject: string) => `strace -f -o /dev/null -P "${file}" -e inject=${inject}`

describe('a failure after the segments are final undoes every one of them', () => {
  const faults: Array<[string, (d: string) => string, string]> = [
    ['removing RESTORING fails (EIO)', (d) => path.join(d, 'RESTORING'), 'unlink,unlinkat:error=EIO'],
    // The plan is written once (RESTORING.tmp, renamed); each segment created is then one appended write(2).
    ['writing the plan to RESTORING fails (ENOSPC)', (d) => path.join(d, 'RESTORING.tmp'), 'write,pwrite64,writev:error=ENOSPC'],
    ['recording a created segment in RESTORING fails (ENOSPC)', (d) => path.join(d, 'RESTORING'), 'write,pwrite64,writev:error=ENOSPC:when=1'],
  ]
  for (const [what, file, inject] of faults) {
    test(`${what}: exit 1, "nothing restored", and nothing is left`, () => {
      const d = copy(pristine, 'late')
      const r = ns(`${strace(file(d), inject)} "${process.execPath}" "${bin}" restore -s "$S"; echo "rc=$?"; segs`, { S: d })
      expect(r.stdout).toMatch(/rc=1/)
      expect(r.stderr).toMatch(/restore failed, nothing restored/)
      expect(r.stdout).toMatch(/^segs=$/m)
    })
  }

  test('switching CURRENT after a fallback fails (ENOSPC): the fallback is undone too', () => {
    const d = copy(pristine, 'fallback')
    fs.rmSync(path.join(d, G2, DATA)) // damage: gen-1 is restored instead, then CURRENT is switched
    const r = ns(`${strace(path.join(d, 'CURRENT.tmp'), 'rename,renameat,renameat2:error=ENOSPC')} "${process.execPath}" "${bin}" restore -s "$S"; echo "rc=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/restore failed, nothing restored.*ENOSPC/)
    expect(r.stdout).toMatch(/^segs=$/m)
  })
})

describe('every field is checked before any system call', () => {
  const forged: Array<[string, Record<string, unknown>]> = [
    ['cuid 1.5', { cuid: 1.5 }],
    ['cuid 4294967295', { cuid: 4294967295 }],
    ['cuid 2^40', { cuid: 2 ** 40 }],
    ['uid -1', { uid: -1 }],
    ['gid "0"', { gid: '0' }],
    ['mode 01777', { mode: 0o1777 }],
    ['a chunk table one entry short', { chunkCount: 1 }],
  ]
  for (const [what, change] of forged) {
    test(`a forged ${what} (CRC recomputed) is refused as damage; nothing is created`, () => {
      const d = copy(pristine, 'forged')
      fs.rmSync(path.join(d, G1), { recursive: true }) // nothing to fall back to
      const file = path.join(d, G2, META)
      const text = fs.readFileSync(file, 'utf8')
      const record = JSON.parse(text.slice(text.indexOf('\n') + 1))
      fs.writeFileSync(file, encodeCheckedJson(1, { ...record, ...change }))
      const r = ns(`sk restore -s "$S"; echo "rc=$?"; segs`, { S: d })
      expect(r.stdout).toMatch(/rc=1/)
      expect(r.stderr).toMatch(/is not a sane record of segment 0x00007200/)
      expect(r.stderr).not.toMatch(/could not remove/)
      expect(r.stdout).toMatch(/^segs=$/m)
    })
  }
})

describe('an I/O error is not damage', () => {
  test('a transient EIO reading CURRENT\'s data fails the restore naming file and errno; nothing is quarantined; the retry restores it', () => {
    const d = copy(pristine, 'eio1')
    const data = path.join(d, G2, DATA)
    const r = ns(`${strace(data, 'pread64,read:error=EIO:when=1')} "${process.execPath}" "${bin}" restore -s "$S"; echo "rc=$?"; segs; sk restore -q -s "$S"; echo "rc2=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toContain(`${DATA}: EIO in pread`)
    expect(r.stderr).toMatch(/nothing was quarantined/)
    expect(r.stdout).toMatch(/rc2=0/)
    expect(r.stdout).toMatch(/^segs=0x00007200,$/m)
    expect(fs.readdirSync(d).filter((f) => f.startsWith('quarantine-'))).toEqual([])
    expect(fs.readFileSync(path.join(d, 'CURRENT'), 'utf8')).toBe(`${G2}\n`)
  })

  test('a persistent EIO fails every restore of CURRENT (never rolling back on its own); --generation of an older one is the way out', () => {
    const d = copy(pristine, 'eio2')
    const data = path.join(d, G2, DATA)
    const inject = strace(data, 'pread64,read:error=EIO')
    const r = ns(
      `${inject} "${process.execPath}" "${bin}" restore -s "$S"; echo "rc=$?"; ${inject} "${process.execPath}" "${bin}" restore -s "$S"; echo "rc=$?"; ` +
        `${inject} "${process.execPath}" "${bin}" restore -q -s "$S" --generation ${G1}; echo "rc3=$?"; segs`,
      { S: d },
    )
    expect(r.stdout.match(/rc=1/g)).toHaveLength(2)
    expect(r.stdout).toMatch(/rc3=0/)
    expect(r.stdout).toMatch(/^segs=0x00007200,$/m)
    expect(fs.readdirSync(d).filter((f) => f.startsWith('quarantine-'))).toEqual([])
    expect(fs.readFileSync(path.join(d, 'CURRENT'), 'utf8')).toBe(`${G2}\n`)
  })
})

describe('TERM during a restore', () => {
  test('restore: undone, exit 1, naming the signal', () => {
    const d = copy(pristine, 'term')
    // The first read of the data file takes 3 s: TERM arrives once the segment exists.
    const r = ns(
      `${strace(path.join(d, G2, DATA), 'pread64,read:delay_enter=3000000:when=1')} "${process.execPath}" "${bin}" restore -s "$S" & s=$!
       until ipcs -m | grep -q 0x00007200; do sleep 0.05; done
       kill -TERM $(cat /proc/$s/task/$s/children)
       wait $s; echo "rc=$?"; segs`,
      { S: d },
    )
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/restore interrupted by SIGTERM: undone, nothing restored/)
    expect(r.stdout).toMatch(/^segs=$/m)
  })
})

describe('a CURRENT naming a missing generation is damage', () => {
  test('with nothing to fall back to: restore exits 1 and run 125 with a true message, never "a first start"', () => {
    const d = copy(pristine, 'gone')
    fs.rmSync(path.join(d, G1), { recursive: true })
    fs.rmSync(path.join(d, G2), { recursive: true })
    const r = ns(`sk restore -s "$S"; echo "rc=$?"`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/CURRENT names gen-000000000002, which is not in the state dir, and no other generation is here/)
    expect(r.stderr).not.toMatch(/first start/)
    const marker = path.join(scratch, `ran-${n}`)
    const app = run('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, bin, 'run', '-s', d, '--', 'touch', marker], { timeout: 30_000 })
    expect(app.status).toBe(125)
    expect(fs.existsSync(marker)).toBe(false)
  })

  test('with an older generation: it is restored, and CURRENT names it', () => {
    const d = copy(pristine, 'gone2')
    fs.rmSync(path.join(d, G2), { recursive: true })
    const r = ns(`sk restore -s "$S"; echo "rc=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=0/)
    expect(r.stdout).toMatch(/^segs=0x00007200,$/m)
    expect(fs.readFileSync(path.join(d, 'CURRENT'), 'utf8')).toBe(`${G1}\n`)
  })
})
