/**
 * Restore from a read-only state dir (issue 13): a volume mounted read-only
 * into a container that only restores. Reading is all a restore needs: it
 * takes a shared lock on LOCK opened read-only (none when LOCK is missing),
 * writes no RESTORING, LINEAGE, CURRENT or LOCK, and says once what it could
 * not record. The lineage still goes into the namespace when LINEAGE exists.
 *
 * Each case runs in IPC and mount namespaces of its own: the state dir is
 * written through its own path, then bind-mounted read-only elsewhere
 * (`mount -o remount,bind,ro`), and restored from there in a fresh IPC
 * namespace. Keys of this file: 0x7400xxxx.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { binDir, canUnshare, root, run } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-ro-'))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))
const why = canUnshare('--ipc', '--mount') ? '' : 'cannot make IPC and mount namespaces here (unshare --ipc --mount)'

/** What is in a directory tree: names, sizes, modes and mtimes (to show nothing was written). */
function tree(dir: string): string[] {
  const out: string[] = []
  for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const st = fs.lstatSync(path.join(dir, name))
    out.push(`${name} ${st.size} ${st.mode.toString(8)} ${st.mtimeMs}`)
  }
  return out.sort()
}

/**
 * Save `setup`'s segments into a new state dir S, optionally change S
 * (`prepare`, a shell snippet), then run `script` in a mount namespace where
 * $R is S mounted read-only; `sk` is the CLI, `rd KEY` prints a segment's first 8 bytes.
 */
function readOnlyCase(name: string, setup: string, prepare: string, script: string) {
  const S = path.join(scratch, name)
  const R = path.join(scratch, `${name}-ro`)
  fs.mkdirSync(S, { mode: 0o700 })
  fs.mkdirSync(R)
  const prelude = [
    `sk() { "${process.execPath}" "${bin}" "$@"; }`,
    `mkseg() { "${path.join(binDir, 'mkseg')}" "$@" >/dev/null; }`,
    `rd() { "${process.execPath}" -e 'const l=require("${path.join(root, 'dist', 'index.js')}"); const b=l.shm.attach(l.shm.get(+process.argv[1])); console.log(b.toString("latin1",0,8).replace(/\\0+$/, "")); l.shm.detach(b)' "$1"; }`,
  ].join('\n')
  const save = run('unshare', ['--ipc', 'sh', '-c', `${prelude}\n${setup}\n${prepare}`], { env: { ...process.env, S } })
  expect(save.status, save.stderr).toBe(0)
  const before = tree(S)
  const r = run('unshare', ['--ipc', '--mount', '--propagation', 'private', 'sh', '-c', `${prelude}\nmount --bind "$S" "$R" && mount -o remount,bind,ro "$R" || exit 99\ntouch "$R/probe" 2>/dev/null && exit 98\n${script}`], {
    env: { ...process.env, S, R },
  })
  expect(r.status, r.stderr).not.toBe(99)
  expect(r.status, 'the bind mount is writable').not.toBe(98)
  expect(tree(S)).toEqual(before) // nothing written, nothing removed
  return r
}

/** The --json report printed last (pretty-printed: from its first line "{" to the end). */
const lastReport = (stdout: string) => JSON.parse(stdout.slice(stdout.lastIndexOf('\n{\n') + 1))

const write = (key: string, text: string) => `mkseg ${key} 4096 0640 zero && "${process.execPath}" -e 'const l=require("${path.join(root, 'dist', 'index.js')}"); const b=l.shm.attach(l.shm.get(+process.argv[1])); b.write(process.argv[2]); l.shm.detach(b)' ${key} ${text}`

describe.skipIf(why)('restore from a read-only state dir', () => {
  test('with LOCK and LINEAGE there: restored, nothing written, the lineage is recorded in the namespace; a second restore is warm', () => {
    const r = readOnlyCase(
      'with-lineage',
      `${write('0x74000001', 'readonly')} && sk snapshot -q -s "$S"`,
      'test -e "$S/LOCK" && test -e "$S/LINEAGE" || exit 7',
      `sk restore -s "$R" >/dev/null 2>&1
       echo "rc=$?"; sk restore -s "$R" 2>&1; echo "rc2=$?"; rd 0x74000001; sk restore -s "$R" --json`,
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/rc=0/)
    expect(r.stdout).toMatch(/rc2=0/)
    expect(r.stdout).toMatch(/^readonly$/m)
    expect(r.stdout.slice(0, r.stdout.indexOf('{'))).not.toMatch(/EROFS|EACCES|warning|error/)
    expect(lastReport(r.stdout)).toMatchObject({ warm: true, parent: 'gen-000000000001', stateDirReadOnly: 'a read-only mount (EROFS)' })
    expect(r.stdout).toMatch(/nothing restored: this IPC namespace already holds the state of gen-000000000001/)
  })

  test('with no LOCK and no LINEAGE: restored all the same, and one warning says what could not be recorded', () => {
    const r = readOnlyCase(
      'bare',
      `${write('0x74000002', 'bare-dir')} && sk snapshot -q -s "$S"`,
      'rm "$S/LOCK" "$S/LINEAGE"',
      `sk restore -s "$R" --json 2>"$R.err"; echo; echo "rc=$?"; rd 0x74000002; cat "$R.err" >&2`,
    )
    expect(r.stdout).toMatch(/rc=0/)
    expect(r.stdout).toMatch(/^bare-dir$/m)
    const json = JSON.parse(r.stdout.slice(0, r.stdout.indexOf('\n}\n') + 2))
    expect(json).toMatchObject({ generation: 'gen-000000000001', stateDirReadOnly: 'a read-only mount (EROFS)' })
    expect(json.lineageNotRecorded).toMatch(/EROFS/)
    const warnings = r.stderr.split('\n').filter((l) => /warn/.test(l))
    expect(warnings, r.stderr).toHaveLength(1)
    expect(warnings[0]).toMatch(/cannot be written \(a read-only mount \(EROFS\)\): restored without writing anything there — no RESTORING record.*; no lineage record/)
  })

  test('a damaged CURRENT on a read-only dir: the older generation is restored, CURRENT stays, and the warning says so', () => {
    const r = readOnlyCase(
      'fallback',
      `${write('0x74000003', 'older')} && sk snapshot -q -s "$S" && ipcrm -M 0x74000003 && ${write('0x74000003', 'newer')} && sk snapshot -q -s "$S"`,
      'for f in "$S"/gen-000000000002/*; do case "$f" in *.data) printf garbage | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null;; esac; done; test "$(cat "$S/CURRENT")" = gen-000000000002 || exit 6',
      `sk restore -s "$R" 2>&1; echo "rc=$?"; rd 0x74000003`,
    )
    expect(r.stdout).toMatch(/rc=0/)
    expect(r.stdout).toMatch(/^older$/m)
    expect(r.stdout).toMatch(/CURRENT was not pointed at gen-000000000001/)
  })
})
