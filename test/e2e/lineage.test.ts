/**
 * Lineage that survives the app (issue 11): the state the app leaves is the
 * state it gets back, whatever it does to its segments, and a snapshot whose
 * lineage is unknown is never passed off as success.
 *
 * "Containers" are test/e2e/container.ts's (new IPC and PID namespaces, the
 * state dir on the host); the apps are small shell scripts over the C
 * fixtures (mkseg creates a segment, legacy_app pokes and dumps bytes).
 * Shell-entrypoint steps (`restore` … `snapshot`) run in `unshare --ipc`.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { binDir, run } from '../helpers'
import { Container, legacyApp as L, shmkeepBin } from './container'

const node = process.execPath
const MK = path.join(binDir, 'mkseg')
const GRACE = ['--grace', '3']

let scratch: string[] = []
let containers: Container[] = []
afterEach(() => {
  for (const c of containers.splice(0)) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
  for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function stateDir(): string {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-lineage-'))
  scratch.push(work)
  fs.mkdirSync(path.join(work, 'state'), { mode: 0o700 })
  return path.join(work, 'state')
}

/** `shmkeep run -s STATE --grace 3 [args] -- sh -c SCRIPT` as PID 1 of a new container. */
function shmkeep(state: string, script: string, args: string[] = []): Container {
  const c = Container.shmkeep(state, ['/bin/sh', '-c', script], [...GRACE, ...args], { L, MK })
  containers.push(c)
  return c
}

const current = (state: string) => fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
const gens = (state: string) => fs.readdirSync(state).filter((f) => /^gen-\d{12}$/.test(f)).sort()
const record = (state: string, gen: string) => {
  const t = fs.readFileSync(path.join(state, gen, 'GENERATION'), 'utf8')
  return JSON.parse(t.slice(t.indexOf('\n') + 1))
}

/** Steps of a shell entrypoint in one IPC namespace: `sk` is the CLI. */
function steps(state: string, script: string) {
  return run('unshare', ['--ipc', 'sh', '-c', `sk() { "${node}" "${shmkeepBin}" "$@"; }\n${script}`], { env: { ...process.env, S: state, L, MK }, timeout: 60_000 })
}

/** First generation: key 0x5555 (8 KiB) holding "first", saved when the app exits on its own. */
async function firstGeneration(state: string, key = '0x5555'): Promise<void> {
  const r = await shmkeep(state, `"$MK" ${key} 8192 0600 zero >/dev/null && "$L" poke ${key} 0 first`).exited
  expect(r.status, r.stderr).toBe(0)
  expect(current(state)).toBe('gen-000000000001')
}

describe('run: the lineage survives what the app does to its segments', () => {
  test('an app that removes every object (ipcrm -a, our record included) and recreates its segment, then again larger a second later: its state becomes CURRENT and comes back', async () => {
    const state = stateDir()
    await firstGeneration(state)
    // The recreates get new change times (one within the restore's second, one after it): LIVE's id/key/ctime match lost the lineage here.
    const c = shmkeep(state, `ipcrm -a && "$MK" 0x5555 8192 0600 zero >/dev/null && sleep 1.1 && ipcrm -M 0x5555 && "$MK" 0x5555 16384 0600 zero >/dev/null && "$L" poke 0x5555 0 second && echo "ready-$$" && exec sleep 600`)
    await c.waitFor(/ready-\d+/)
    const r = await c.stop(20)
    expect(r.stderr).not.toMatch(/BESIDE/)
    expect(r.status, r.stderr).toBe(143) // the app's own status (sleep, TERM)
    expect(current(state)).toBe('gen-000000000002')
    expect(record(state, 'gen-000000000002').parent).toBe('gen-000000000001')
    const next = await shmkeep(state, `"$L" dump 0x5555 0 16 && ipcs -m | grep 0x00005555`).exited
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout).toMatch(/^second\n.* 16384 /m)
  })

  test('a Postgres-like app that removes its segment at a clean stop: the empty generation becomes CURRENT (the app decided), no crash-time state comes back', async () => {
    const state = stateDir()
    await firstGeneration(state, '0x5556')
    const pg = shmkeep(state, `trap 'ipcrm -M 0x5556; exit 0' TERM; "$L" dump 0x5556 0 8; echo "ready-$$"; while :; do sleep 0.05; done`)
    await pg.waitFor(/ready-\d+/)
    const r = await pg.stop(20)
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^first$/m)
    expect(current(state)).toBe('gen-000000000002')
    expect(record(state, 'gen-000000000002').segments).toEqual([])
    const next = await shmkeep(state, `"$L" dump 0x5556 0 8; echo "dump=$?"`).exited
    expect(next.stdout).toMatch(/dump=1/) // nothing at the key: the app starts as after its clean stop
  })
})

describe('unknown lineage is never success', () => {
  /** A namespace holding the saved key already, but no lineage record (e.g. from before shmkeep kept one). */
  const warmWithout = (state: string, args: string[]) =>
    run('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', 'sh', '-c', `"$MK" 0x5555 8192 0600 zero >/dev/null && "$L" poke 0x5555 0 mine && exec "${node}" "${shmkeepBin}" run -s "$S" --grace 3 ${args.join(' ')} -- "$L" dump 0x5555 0 8`], {
      env: { ...process.env, S: state, L, MK },
      timeout: 60_000,
    })

  test('run writes beside CURRENT, exits 123 with one error line naming the adopt command, which works; run --force switches', async () => {
    const state = stateDir()
    await firstGeneration(state)
    const r = warmWithout(state, [])
    expect(r.status, r.stderr).toBe(123)
    const errors = r.stderr.split('\n').filter((l) => /error:/.test(l))
    expect(errors, r.stderr).toHaveLength(1)
    expect(errors[0]).toMatch(/BESIDE CURRENT.*lineage unknown.*shmkeep adopt --state-dir \S+ gen-000000000002/)
    expect(current(state)).toBe('gen-000000000001')
    const cmd = /shmkeep adopt (--state-dir \S+ gen-\d{12})/.exec(errors[0]!)![1]!.split(' ')
    const a = run(node, [shmkeepBin, 'adopt', ...cmd])
    expect(a.status, a.stderr).toBe(0)
    expect(current(state)).toBe('gen-000000000002')

    const f = warmWithout(state, ['--force'])
    expect(f.status, f.stderr).toBe(0)
    expect(current(state)).toBe('gen-000000000003')
  })

  test('shell steps: restore … snapshot keeps the lineage through a recreate; after ipcrm -a the snapshot goes beside CURRENT (exit 3) saying why', () => {
    const state = stateDir()
    const first = steps(state, `"$MK" 0x5557 131072 0600 zero >/dev/null && sk snapshot -q -s "$S"`)
    expect(first.status, first.stderr).toBe(0)
    const kept = steps(state, `sk restore -q -s "$S" && ipcrm -M 0x5557 && "$MK" 0x5557 131072 0600 zero >/dev/null && sk snapshot -q -s "$S"`)
    expect(kept.status, kept.stderr).toBe(0)
    expect(current(state)).toBe('gen-000000000002')
    const lost = steps(state, `sk restore -q -s "$S" && ipcrm -a && "$MK" 0x5557 131072 0600 zero >/dev/null && sk snapshot -s "$S"; echo "rc=$?"`)
    expect(lost.stdout).toMatch(/rc=3/)
    expect(lost.stderr).toMatch(/lineage unknown: no lineage record in this IPC namespace/)
    expect(current(state)).toBe('gen-000000000002')
  })
})

describe('recovery', () => {
  test('every generation damaged: run exits 125; --on-restore-error=start --accept-new-state makes the new state CURRENT, and the next start gets it back', async () => {
    const state = stateDir()
    await firstGeneration(state)
    const data = fs.readdirSync(path.join(state, 'gen-000000000001')).find((f) => f.endsWith('.data'))!
    fs.writeFileSync(path.join(state, 'gen-000000000001', data), 'x') // wrong size: damage
    const refused = await shmkeep(state, 'true').exited
    expect(refused.status).toBe(125)
    const fresh = shmkeep(state, `"$MK" 0x5555 8192 0600 zero >/dev/null && "$L" poke 0x5555 0 fresh && echo "ready-$$" && exec sleep 600`, ['--on-restore-error', 'start', '--accept-new-state'])
    await fresh.waitFor(/ready-\d+/)
    const r = await fresh.stop(20)
    expect(r.status, r.stderr).toBe(143)
    expect(r.stderr).not.toMatch(/BESIDE/)
    expect(current(state)).toBe('gen-000000000002')
    const next = await shmkeep(state, `"$L" dump 0x5555 0 8`).exited
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout).toMatch(/^fresh$/m)
  })

  test('a quarantined generation can be restored by name, and generations lists it', () => {
    const state = stateDir()
    const s = steps(state, `"$MK" 0x5558 8192 0600 zero >/dev/null && "$L" poke 0x5558 0 kept && sk snapshot -q -s "$S"`)
    expect(s.status, s.stderr).toBe(0)
    fs.renameSync(path.join(state, 'gen-000000000001'), path.join(state, 'quarantine-gen-000000000001'))
    fs.rmSync(path.join(state, 'CURRENT'))
    const list = run(node, [shmkeepBin, 'generations', '-s', state])
    expect(list.stdout).toMatch(/quarantine-gen-000000000001/)
    const r = steps(state, `sk restore -q -s "$S" --generation quarantine-gen-000000000001 && "$L" dump 0x5558 0 8`)
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^kept$/m)
    expect(gens(state)).toEqual([])
  })
})
