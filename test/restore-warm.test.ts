/**
 * Warm restarts: `restore()` and `shmkeep restore` apply the warm-namespace
 * rule of src/state/lineage.ts by default — a second restore in a namespace
 * that already holds its state (a container restarted inside its pod) keeps
 * the live bytes, reports `warm: true` with what is live and does not throw;
 * `warm: 'ignore'` restores anyway with `onConflict` deciding. A missing
 * state dir is a StateDirMissingError (never "a first start"), the same
 * class from require() and import().
 *
 * Every case runs in a child of its own IPC namespace (`unshare --ipc`):
 * its segments and lineage queue die with it. Keys of this file: 0x5190xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { root, run, runNode, tempDir } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

/** Run `body` (async, with `lib`, `stateDir` and `seg()` in scope) in a namespace of its own; prints its JSON. */
function inNamespace(stateDir: string, body: string) {
  const r = runNode(
    `
    const { shm, snapshot, restore } = lib
    const stateDir = ${JSON.stringify(stateDir)}
    const KEY = 0x51900001
    /** The segment's first 5 bytes. */
    const bytes = () => { const b = shm.attach(shm.get(KEY)); const t = b.toString('latin1', 0, 5); shm.detach(b); return t }
    const write = (text) => { const b = shm.attach(shm.get(KEY)); b.write(text); shm.detach(b) }
    ;(async () => { ${body} })().then((out) => console.log(JSON.stringify(out)), (e) => { console.log(JSON.stringify({ threw: e.constructor.name, message: e.message })) })
    `,
    { prefix: ['unshare', '--ipc'] },
  )
  expect(r.status, r.stderr).toBe(0)
  return r.json
}

/** A state dir whose CURRENT holds segment 0x51900001 with "saved". */
function savedState(name: string): string {
  const dir = path.join(tmp.dir, name)
  const r = inNamespace(
    dir,
    `
    const id = shm.get(KEY, { size: 4096, create: true, mode: 0o640 })
    write('saved')
    const s = await snapshot({ stateDir })
    return { generation: s.generation }
    `,
  )
  expect(r.generation).toMatch(/^gen-/)
  return dir
}

describe('restore() in a warm namespace', () => {
  test('a second restore in the same namespace keeps the live bytes: warm: true, what is live, no throw', () => {
    const dir = savedState('warm-lib')
    const r = inNamespace(
      dir,
      `
      const first = await restore({ stateDir })
      const restored = bytes()
      write('LIVE!')
      const second = await restore({ stateDir })
      return { first: { warm: first.warm, generation: first.generation }, restored, second, after: bytes() }
      `,
    )
    expect(r.threw, r.message).toBeUndefined()
    expect(r.first).toEqual({ warm: false, generation: 'gen-000000000001' })
    expect(r.restored).toBe('saved')
    expect(r.second).toMatchObject({ warm: true, generation: null, segments: [], live: ['segment 0x51900001'], parent: 'gen-000000000001' })
    expect(r.second.warmReason).toMatch(/lineage record/)
    expect(r.after).toBe('LIVE!')
  })

  test('warm without a lineage record (a saved key is live, e.g. the app made it): kept, warm: true', () => {
    const dir = savedState('warm-live-key')
    const r = inNamespace(
      dir,
      `
      shm.get(KEY, { size: 4096, create: true })
      write('APP!!')
      const report = await restore({ stateDir })
      return { report, after: bytes() }
      `,
    )
    expect(r.report).toMatchObject({ warm: true, generation: null, live: ['segment 0x51900001'] })
    expect(r.report.parent).toBeUndefined() // no lineage record: unknown
    expect(r.report.warmReason).toMatch(/live here already: segment 0x51900001/)
    expect(r.after).toBe('APP!!')
  })

  test("warm: 'ignore' restores anyway: onConflict 'fail' refuses speaking of options; 'replace' rolls the namespace back", () => {
    const dir = savedState('warm-ignore')
    const r = inNamespace(
      dir,
      `
      await restore({ stateDir })
      write('LIVE!')
      let refused
      try { await restore({ stateDir, warm: 'ignore' }) } catch (e) { refused = { name: e.constructor.name, message: e.message, live: bytes() } }
      const back = await restore({ stateDir, warm: 'ignore', onConflict: 'replace' })
      return { refused, back: { warm: back.warm, generation: back.generation, statuses: back.segments.map((s) => s.status) }, after: bytes() }
      `,
    )
    expect(r.refused.name).toBe('RestoreError')
    expect(r.refused.message).toMatch(/0x51900001 .*onConflict: 'skip' keeps them, onConflict: 'replace'/)
    expect(r.refused.message).not.toMatch(/--on-conflict/)
    expect(r.refused.live).toBe('LIVE!')
    expect(r.back).toEqual({ warm: false, generation: 'gen-000000000001', statuses: ['restored'] })
    expect(r.after).toBe('saved')
  })

  test("a cold namespace restores whatever warm says; warm: 'bogus' is an OptionTypeError", () => {
    const dir = savedState('cold')
    const r = inNamespace(
      dir,
      `
      const keep = await restore({ stateDir, warm: 'keep' })
      let bad
      try { await restore({ stateDir, warm: 'bogus' }) } catch (e) { bad = { name: e.constructor.name, option: e.option } }
      return { keep: { warm: keep.warm, generation: keep.generation }, bytes: bytes(), bad }
      `,
    )
    expect(r.keep).toEqual({ warm: false, generation: 'gen-000000000001' })
    expect(r.bytes).toBe('saved')
    expect(r.bad).toEqual({ name: 'OptionTypeError', option: 'warm' })
  })
})

describe('a missing state dir', () => {
  test('restore() rejects with StateDirMissingError (a StateFileError, code ENOENT), the same class from require and import, and creates nothing', () => {
    const missing = path.join(tmp.dir, 'not-mounted', 'state')
    const r = runNode(
      `
      ;(async () => {
        const esm = await import(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
        const out = { same: esm.StateDirMissingError === lib.StateDirMissingError && typeof lib.StateDirMissingError === 'function' }
        try { await esm.restore({ stateDir: ${JSON.stringify(missing)} }) } catch (e) {
          Object.assign(out, { cjs: e instanceof lib.StateDirMissingError, esm: e instanceof esm.StateDirMissingError, stateFile: e instanceof lib.StateFileError, restoreError: e instanceof lib.RestoreError, code: e.code, name: e.name, message: e.message })
        }
        console.log(JSON.stringify(out))
      })()
      `,
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toMatchObject({ same: true, cjs: true, esm: true, stateFile: true, restoreError: false, code: 'ENOENT', name: 'StateDirMissingError' })
    expect(r.json.message).toMatch(/does not exist — mount a volume there/)
    expect(fs.existsSync(path.join(tmp.dir, 'not-mounted'))).toBe(false)
  })
})

describe('shmkeep restore --warm', () => {
  test('a second restore is warm (exit 0, kept); --warm ignore fails naming --on-conflict; --warm ignore --on-conflict=replace rolls back; a bad value is a usage error', () => {
    const dir = savedState('warm-cli')
    const sk = `"${process.execPath}" "${bin}"`
    const script = `
      ${sk} restore -q -s "$S" --json >"$W/first.json"; echo "rc1=$?"
      "${process.execPath}" -e 'const l=require("${path.join(root, 'dist', 'index.js')}"); const b=l.shm.attach(l.shm.get(0x51900001)); b.write("LIVE!")'
      ${sk} restore -s "$S" --json >"$W/warm.json" 2>"$W/warm.err"; echo "rc2=$?"
      ${sk} restore -s "$S" --warm ignore 2>"$W/ignore.err"; echo "rc3=$?"
      ${sk} restore -q -s "$S" --warm ignore --on-conflict=replace --json >"$W/replace.json"; echo "rc4=$?"
      ${sk} restore -q -s "$S" --warm sometimes 2>"$W/bad.err"; echo "rc5=$?"
      ${sk} restore -q -s "$S/nope" 2>"$W/missing.err"; echo "rc6=$?"
    `
    const w = path.join(tmp.dir, 'warm-cli-out')
    fs.mkdirSync(w)
    const r = run('unshare', ['--ipc', 'sh', '-c', script], { env: { ...process.env, S: dir, W: w } })
    expect(r.status, r.stderr).toBe(0)
    const read = (f: string) => fs.readFileSync(path.join(w, f), 'utf8')
    expect(r.stdout).toMatch(/rc1=0\nrc2=0\nrc3=1\nrc4=0\nrc5=2\nrc6=1/)
    expect(JSON.parse(read('first.json'))).toMatchObject({ warm: false, generation: 'gen-000000000001' })
    expect(JSON.parse(read('warm.json'))).toMatchObject({ warm: true, generation: null, live: ['segment 0x51900001'] })
    expect(read('warm.err')).toMatch(/nothing restored.*--warm ignore restores anyway/)
    expect(read('warm.err')).not.toMatch(/first start/)
    expect(read('ignore.err')).toMatch(/0x51900001.*--on-conflict=skip keeps them, --on-conflict=replace/)
    expect(read('ignore.err')).not.toMatch(/onConflict/)
    expect(JSON.parse(read('replace.json'))).toMatchObject({ warm: false, generation: 'gen-000000000001', segments: [{ status: 'restored' }] })
    expect(read('bad.err')).toMatch(/--warm must be keep or ignore/)
    expect(read('missing.err').trim().split('\n')).toHaveLength(1)
    expect(read('missing.err')).toMatch(/nope: does not exist — mount a volume there/)
  })
})
