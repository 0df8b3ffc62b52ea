/**
 * Trusting the state dir (issue 11, "Trust and the state dir"): what it is,
 * who can write it, where it lies, and that no state file can hang a command.
 *
 * Each case runs the CLI (bin/shmkeep.js) in an IPC namespace of its own
 * (`unshare --ipc`), against a state dir made for it under a scratch folder.
 * A command that hangs is killed by spawnSync's timeout and fails the test.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { binDir, root, run, type ChildResult } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
const mkseg = path.join(binDir, 'mkseg')
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-trust-'))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

let n = 0
/** A fresh directory for one case. */
function dir(name: string): string {
  const d = path.join(scratch, `${name}-${++n}`)
  fs.mkdirSync(d, { mode: 0o700 })
  return d
}

/** A shell script in a fresh IPC namespace; `sk` is the CLI. Killed after `timeoutMs`. */
function ns(script: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): ChildResult {
  const prelude = `sk() { "${process.execPath}" "${bin}" "$@"; }\nmkseg() { "${mkseg}" "$@" >/dev/null; }\nsegs() { echo "segs=$(ipcs -m | awk '/^0x/{printf "%s,", $1}')"; }\n`
  return run('unshare', ['--ipc', 'sh', '-c', prelude + script], { env: { ...process.env, SHMKEEP_INSECURE_STATE_DIR: '', ...env }, timeout: timeoutMs })
}

/** A state dir holding one generation (CURRENT) of one 8 KiB segment at 0x7100. */
let pristine: string
beforeAll(() => {
  pristine = dir('pristine')
  const r = ns(`mkseg 0x7100 131072 0600 pat && sk snapshot -q -s "$S"`, { S: pristine })
  expect(r.status, r.stderr).toBe(0)
})

function copy(name: string): string {
  const d = dir(name)
  fs.cpSync(pristine, d, { recursive: true })
  return d
}

function current(d: string): string {
  return fs.readFileSync(path.join(d, 'CURRENT'), 'utf8').trim()
}

describe('no state file can hang a command', () => {
  const places: Array<[string, (d: string) => string]> = [
    ['CURRENT', (d) => path.join(d, 'CURRENT')],
    ['GENERATION', (d) => path.join(d, current(d), 'GENERATION')],
    ['a .meta', (d) => path.join(d, current(d), fs.readdirSync(path.join(d, current(d))).find((f) => f.endsWith('.meta'))!)],
    ['LINEAGE', (d) => path.join(d, 'LINEAGE')],
    ['LOCK', (d) => path.join(d, 'LOCK')],
  ]
  for (const [what, where] of places) {
    test(`a FIFO in place of ${what}: restore ends, naming the file, and leaves no segment`, () => {
      const d = copy('fifo')
      const file = where(d)
      fs.rmSync(file, { force: true })
      expect(run('mkfifo', ['-m', '0600', file]).status).toBe(0)
      const r = ns(`sk restore -s "$S"; echo "rc=$?"; segs`, { S: d }, 20_000)
      expect(r.signal, `hung: ${r.stderr}`).toBeNull()
      if (what === 'LINEAGE' || what === 'CURRENT') {
        // LINEAGE only keys the lineage record (not recorded: a warning); an
        // unreadable CURRENT is damage, and the newest generation that
        // verifies is restored instead.
        expect(r.stdout).toMatch(/rc=0/)
        expect(r.stderr).toMatch(new RegExp(`${what}: is not a regular file \\(a FIFO\\)`))
      } else {
        expect(r.stdout).toMatch(/rc=1/)
        expect(r.stderr).toContain(path.basename(file))
        expect(r.stderr).toMatch(/FIFO/)
        expect(r.stdout).toMatch(/segs=$/m)
      }
    })
  }
})

describe('generation names from users stay inside the state dir', () => {
  test('restore --generation of a symlinked generation directory is refused, nothing restored', () => {
    const d = copy('symgen')
    const outside = dir('outside')
    fs.cpSync(path.join(d, current(d)), path.join(outside, current(d)), { recursive: true })
    fs.symlinkSync(path.join(outside, current(d)), path.join(d, 'gen-000000000099'))
    const r = ns(`sk restore -s "$S" --generation gen-000000000099; echo "rc=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/gen-000000000099: is a symbolic link/)
    expect(r.stdout).toMatch(/segs=$/m)
  })

  test('inspect with a path is refused; verify of a missing generation says so (not DAMAGED)', () => {
    const d = copy('names')
    const i = run(process.execPath, [bin, 'inspect', '-s', d, '../../etc'])
    expect(i.status).toBe(1)
    expect(i.stderr).toMatch(/is not a generation name/)
    const v = run(process.execPath, [bin, 'verify', '-s', d, 'gen-000000000077'])
    expect(v.status).toBe(1)
    expect(v.stderr).toMatch(/gen-000000000077: no such generation/)
    expect(v.stdout).not.toMatch(/DAMAGED/)
    const nope = run(process.execPath, [bin, 'verify', '-s', d, 'nope'])
    expect(nope.stderr).toMatch(/nope: is not a generation name/)
  })
})

describe('who may write the state dir', () => {
  test('a world-writable state dir is refused with one line and the fix; --insecure-state-dir trusts it', () => {
    const d = copy('world')
    fs.chmodSync(d, 0o777)
    const r = ns(`sk restore -s "$S"; echo "rc=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    const lines = r.stderr.trim().split('\n')
    expect(lines, r.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/writable by every user \(mode 0777\).*chmod o-w.*--insecure-state-dir/)
    expect(r.stdout).toMatch(/segs=$/m)
    const ok = ns(`sk restore -q -s "$S" --insecure-state-dir && segs`, { S: d })
    expect(ok.status, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/segs=0x00007100,$/m)
  })

  test('the library names its option (insecureStateDir: true), the CLI its flag', () => {
    const d = copy('world-lib')
    fs.chmodSync(d, 0o777)
    const lib = JSON.stringify(path.join(root, 'dist', 'index.js'))
    const script = `require(${lib}).restore({ stateDir: process.argv[1] }).then(() => console.log('restored'), (e) => console.log(e.message))`
    const r = run('unshare', ['--ipc', process.execPath, '-e', script, d], { env: { ...process.env, SHMKEEP_INSECURE_STATE_DIR: '' } })
    expect(r.stdout, r.stderr).toMatch(/writable by every user.*\(insecureStateDir: true to trust it anyway\)/)
    expect(r.stdout).not.toMatch(/--insecure-state-dir/)
  })

  test('a state dir owned by another user, or a file in it, is refused (root restores nothing a user could forge)', () => {
    const d = copy('foreign')
    fs.chownSync(d, 1000, 1000)
    const r = ns(`sk restore -s "$S"; echo "rc=$?"; segs`, { S: d })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/owned by uid 1000.*chown/)
    expect(r.stdout).toMatch(/segs=$/m)

    const f = copy('foreign-file')
    const meta = fs.readdirSync(path.join(f, current(f))).find((x) => x.endsWith('.meta'))!
    fs.chownSync(path.join(f, current(f), meta), 1000, 1000)
    const g = ns(`sk restore -s "$S"; echo "rc=$?"`, { S: f })
    expect(g.stdout).toMatch(/rc=1/)
    expect(g.stderr).toContain(`${meta}: is owned by uid 1000`)
  })

  test('a group-writable setgid state dir (a Kubernetes fsGroup volume) is trusted', () => {
    const d = copy('fsgroup')
    fs.chownSync(d, 0, 2000)
    fs.chmodSync(d, 0o2770)
    const r = ns(`sk restore -q -s "$S" && segs && sk snapshot -q -s "$S"`, { S: d })
    expect(r.status, r.stderr).toBe(0)
  })
})

describe('where the state dir lies', () => {
  test('/dev, /proc and a link into /dev are refused', () => {
    const link = path.join(dir('link'), 'state')
    fs.symlinkSync('/dev/shm', link)
    for (const s of ['/dev', '/proc/self', link]) {
      const r = ns(`sk snapshot -s "$S"; echo "rc=$?"`, { S: s })
      expect(r.stdout, s).toMatch(/rc=1/)
      expect(r.stderr, s).toMatch(/is under \/(dev|proc), which is not storage/)
    }
    expect(fs.existsSync('/dev/LOCK')).toBe(false)
  })

  test('restore and run never create a missing state dir; snapshot does and says so', () => {
    const missing = path.join(dir('missing'), 'typo')
    const r = ns(`sk restore -s "$S"; echo "rc=$?"`, { S: missing })
    expect(r.stdout).toMatch(/rc=1/)
    expect(r.stderr).toMatch(/typo: does not exist — mount a volume there/)
    const marker = path.join(scratch, `ran-${n}`)
    const app = run('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, bin, 'run', '-s', missing, '--', 'touch', marker], { timeout: 30_000 })
    expect(app.status).toBe(125)
    expect(app.stderr).toMatch(/does not exist — mount a volume there.*not started/)
    expect(fs.existsSync(marker)).toBe(false)
    expect(fs.existsSync(missing)).toBe(false)
    const s = ns(`sk snapshot -s "$S"`, { S: missing })
    expect(s.status, s.stderr).toBe(0)
    expect(s.stderr).toMatch(/created the state dir/)
    expect(fs.statSync(missing).mode & 0o777).toBe(0o700)
  })

  test('not a mount point: restore warns once; a tmpfs is warned about, and a mount point is not', () => {
    const d = copy('plain')
    const r = ns(`sk restore -s "$S" && segs`, { S: d })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr.match(/is not a mount point/g)).toHaveLength(1)
    const t = dir('tmpfs')
    const m = run('unshare', ['--mount', '--ipc', 'sh', '-c', `mount -t tmpfs -o mode=0700 none "$S" && "${process.execPath}" "${bin}" snapshot -s "$S" && "${process.execPath}" "${bin}" restore -s "$S"`], {
      env: { ...process.env, S: t },
      timeout: 30_000,
    })
    expect(m.status, m.stderr).toBe(0)
    expect(m.stderr).toMatch(/is on tmpfs/)
    expect(m.stderr).not.toMatch(/not a mount point/)
  })
})
