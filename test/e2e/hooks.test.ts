/**
 * Stop and start hooks of `shmkeep run`, and a stop that waits for the whole
 * container, from the operator's side.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'
import { Container, legacyApp } from './container'
import { run as runCmd } from '../helpers'
import { savedByte } from '../snapkit'

const dirs: string[] = []
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-hooks-'))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

test('hooks run in order, inside the deadline; a hanging one is cut off and the snapshot is still taken', async () => {
  const state = tmp()
  const log = path.join(tmp(), 'hooks.log')
  const c = Container.shmkeep(state, [legacyApp, 'serve', '0x4100'], [
    '--grace', '8',
    '--hook-timeout', '1',
    '--post-start', `echo post-start >> ${log}`,
    '--pre-stop', `echo deregister >> ${log}`,
    '--pre-stop', 'sleep 60',
    '--pre-stop', `echo drained >> ${log}`,
    '--post-stop', `echo post-stop >> ${log}`,
  ])
  await c.waitFor(/post-start hook .* finished/)
  const r = await c.stop(8)
  expect(r.status, r.stderr).toBe(0)
  expect(fs.readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual(['post-start', 'deregister', 'drained', 'post-stop'])
  // The arithmetic counts the hooks: 3 pre-stop + 1 post-stop hooks of 1 s each.
  expect(r.stderr).toMatch(/stop timeout 2\.0 s = grace 8 s − snapshot reserve 2\.0 s .* − hooks 4 s/)
  expect(r.stderr).toMatch(/pre-stop hook `sleep 60` timed out \(1 s\) and was killed; going on/)
  expect(r.stderr).toMatch(/snapshot gen-000000000001: 1 segment/)
  // The hooks' order around the stop: deregister, then the signal, then the snapshot, then post-stop.
  const order = ['pre-stop hook `echo deregister', 'forwarded SIGTERM', 'snapshot gen-', 'post-stop hook'].map((s) => r.stderr.indexOf(s))
  expect(order).toEqual([...order].sort((a, b) => a - b))
}, 30_000)

test('hooks can come from the environment, one per line', async () => {
  const state = tmp()
  const log = path.join(tmp(), 'hooks.log')
  // Two post-stop hooks of 5 s take 10 s: a 15 s grace leaves the app 3 s (run refuses under 1 s).
  const c = Container.shmkeep(state, [legacyApp, 'exit', '0'], ['--grace', '15'], { SHMKEEP_POST_STOP: `echo one >> ${log}\necho two; echo three >> ${log}` })
  const r = await c.exited
  expect(r.status, r.stderr).toBe(0)
  expect(fs.readFileSync(log, 'utf8')).toBe('one\nthree\n')
}, 30_000)

test('a background worker started by the app\'s shell wrapper is stopped before the snapshot, and its last write is in it', async () => {
  const state = tmp()
  // The wrapper starts a worker in the background and execs the server. Only
  // the server gets the forwarded TERM; as PID 1, shmkeep stops the worker too.
  const c = Container.shmkeep(state, ['/bin/sh', '-c', `${legacyApp} serve 0x4101 & exec ${legacyApp} serve 0x4102`], ['--grace', '10'])
  await c.waitFor(/app started/)
  await new Promise((r) => setTimeout(r, 300))
  const r = await c.stop(10)
  expect(r.status, r.stderr).toBe(0)
  expect(r.stderr).not.toMatch(/inconsistent/)
  const gen = path.join(state, fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim())
  for (const key of ['0x00004101', '0x00004102']) {
    // Its saved bytes: a file of its own, or (a small segment) its place in pack.data.
    const at = savedByte(state, path.basename(gen), key)
    const bytes = fs.readFileSync(at.file).subarray(at.offset)
    // serve writes "final:<count>" at offset 64 when TERM reaches it.
    expect(bytes.subarray(64, 128).toString('latin1').replace(/\0.*$/s, '')).toMatch(/^final:\d+$/)
  }
}, 30_000)

test('as PID 1, a process that ignores TERM is killed at the stop timeout and named in the log', async () => {
  const state = tmp()
  const c = Container.shmkeep(state, ['/bin/sh', '-c', `${legacyApp} ignore-term & exec ${legacyApp} serve 0x4103`], ['--stop-timeout', '1'])
  await c.waitFor(/app started/)
  await new Promise((r) => setTimeout(r, 200))
  const r = await c.stop(10)
  expect(r.stderr).toMatch(/still running after 1\.0 s, killed with SIGKILL: \d+ \(.*legacy_app ignore-term\)/)
  expect(r.stderr).toMatch(/snapshot gen-000000000001/)
  expect(r.status).toBe(0) // the app itself stopped on TERM
}, 30_000)

test('shmkeep demo shows the point in a few seconds', () => {
  const r = runCmd(process.execPath, [path.resolve(__dirname, '..', '..', 'bin', 'shmkeep.js'), 'demo'])
  expect(r.status, r.stderr).toBe(0)
  expect(r.stdout).toMatch(/container 2: .*\n(.*\n)*\s+\| a b c d e f g h i j k l m n o p q r s t u v w x y z/)
  expect(r.stdout).toMatch(/without shmkeep:(.*\n)*\s+\| no segment at key 0x162e/)
}, 60_000)
