/**
 * Many small segments: RESTORING is written once with the plan and each
 * segment created is appended as one 32-byte line (src/state/statedir.ts),
 * instead of the whole record rewritten and renamed per segment. What it
 * exists for still holds: a restorer SIGKILLed among its appends is undone by
 * the next restore in the namespace, which then restores every segment once.
 *
 * Keys of this file: 0x7300xxxx (each case in an IPC namespace of its own).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { StateDir } from '../src/state/statedir'
import { binDir, dist, root, run } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-many-'))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

/** A script printing key → SHA-1 of every segment of its namespace. */
const sumsJs = path.join(scratch, 'sums.js')
fs.writeFileSync(
  sumsJs,
  `const l = require(${JSON.stringify(dist)}); const o = {}
for (const s of l.shm.list()) { const b = l.shm.attach(s.id); o[l.formatKey(s.key)] = require('node:crypto').createHash('sha1').update(b).digest('hex'); l.shm.detach(b) }
console.log(JSON.stringify(o))`,
)
const sums = `sums() { "${process.execPath}" "${sumsJs}"; }`

function ns(script: string, env: NodeJS.ProcessEnv) {
  const prelude = [`sk() { "${process.execPath}" "${bin}" "$@"; }`, `mkseg() { "${path.join(binDir, 'mkseg')}" "$@" >/dev/null; }`, sums].join('\n')
  return run('unshare', ['--ipc', 'sh', '-c', `${prelude}\n${script}`], { env: { ...process.env, ...env }, timeout: 120_000 })
}

describe('the RESTORING record', () => {
  test('the plan, then one whole line per segment created; a torn or foreign line makes it damaged (removed, reported)', () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'record-'))
    const state = StateDir.open(dir)
    const plan = { ns: 'boot:ipc:1', pid: 42, generation: 'gen-000000000001', startedAt: new Date(0).toISOString(), keys: ['0x73000001', '0x73000002'], created: [] }
    const log = state.startRestoring(plan)
    log.created('0x73000001', 7)
    log.created('0x73000002', 2147483647)
    log.close()
    const file = path.join(dir, 'RESTORING')
    expect(fs.statSync(file).size % 32).toBe(0)
    expect(state.readRestoring()).toEqual({ ...plan, created: [{ key: '0x73000001', id: 7 }, { key: '0x73000002', id: 2147483647 }] })

    fs.truncateSync(file, fs.statSync(file).size - 5) // a torn last line
    expect(state.readRestoring()).toMatchObject({ damaged: expect.stringMatching(/torn line/) })
    expect(fs.existsSync(file)).toBe(false)

    state.startRestoring(plan).close()
    fs.appendFileSync(file, 'removed 0x73000001 7'.padEnd(31) + '\n')
    expect(state.readRestoring()).toMatchObject({ damaged: expect.stringMatching(/not "created KEY ID"/) })
  })
})

describe('SIGKILL among the appends', () => {
  test('60 small segments, the restorer killed at its 30th append: the next restore in the namespace removes what it made and restores all 60 once', () => {
    const S = path.join(scratch, 'many')
    fs.mkdirSync(S, { mode: 0o700 })
    const W = fs.mkdtempSync(path.join(scratch, 'w-'))
    const r = ns(
      `
      i=1; while [ $i -le 60 ]; do mkseg -s $i $(printf 0x7300%04x $i) 4096 0600 pat || exit 9; i=$((i + 1)); done
      sums >"$W/saved.json"
      sk snapshot -q -s "$S" || exit 8
      unshare --ipc sh -c '
        strace -f -qq -o /dev/null -P "$S/RESTORING" -e trace=write -e inject=write:signal=KILL:when=30 "$SK_NODE" "$SK_BIN" restore -q -s "$S"
        echo "killed=$?"
        echo "left=$(ipcs -m | grep -c "^0x7300")"
        "$SK_NODE" "$SK_BIN" restore -s "$S" 2>"$W/again.err"; echo "again=$?"
        "$SK_NODE" "$SUMS" >"$W/back.json"
      '
      `,
      { S, W, SK_NODE: process.execPath, SK_BIN: bin, SUMS: sumsJs },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/killed=137/)
    // 29 recorded, and the 30th created but not yet recorded (the kill came at its append).
    expect(Number(/left=(\d+)/.exec(r.stdout)?.[1])).toBe(30)
    expect(r.stdout).toMatch(/again=0/)
    expect(fs.readFileSync(path.join(W, 'again.err'), 'utf8')).toMatch(/removed the 30 segment\(s\)/)
    const saved = JSON.parse(fs.readFileSync(path.join(W, 'saved.json'), 'utf8'))
    expect(Object.keys(saved)).toHaveLength(60)
    expect(JSON.parse(fs.readFileSync(path.join(W, 'back.json'), 'utf8'))).toEqual(saved)
    expect(fs.existsSync(path.join(S, 'RESTORING'))).toBe(false)
  })
})
