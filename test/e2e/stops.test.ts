/**
 * Stops that fit the grace period (issue 11): a stop timeout that would be
 * under 1 s is refused at start with the arithmetic; under half the grace it
 * is warned about; the final snapshot's wait for the state dir's lock is
 * bounded by the time left and names the holder; a final snapshot cut off by
 * SIGKILL makes the next reserve grow.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'
import { run } from '../helpers'
import { Container, legacyApp as L, shmkeepBin } from './container'

const node = process.execPath
let cleanup: Array<() => void> = []
afterEach(() => {
  for (const f of cleanup.splice(0)) f()
})

function stateDir(): string {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-stops-'))
  fs.mkdirSync(path.join(work, 'state'), { mode: 0o700 })
  cleanup.push(() => fs.rmSync(work, { recursive: true, force: true }))
  return path.join(work, 'state')
}

function container(state: string, app: string[], args: string[]): Container {
  const c = Container.shmkeep(state, app, args)
  cleanup.push(() => {
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
  })
  return c
}

/** Hold the state dir's lock from outside, as a hung `shmkeep prune` on NFS would. */
function holdLock(state: string): ChildProcess {
  const p = spawn('flock', ['-o', path.join(state, 'LOCK'), 'sleep', '600'], { stdio: 'ignore' })
  cleanup.push(() => p.kill('SIGKILL'))
  return p
}

async function locked(state: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (run('flock', ['-n', path.join(state, 'LOCK'), 'true']).status === 1) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error('the lock was never taken')
}

test('a stop timeout under 1 s is refused at start (exit 2, one line with the arithmetic), the app not started; --stop-timeout overrides', () => {
  const state = stateDir()
  const marker = path.join(state, '..', 'ran')
  const argv = ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', node, shmkeepBin, 'run', '-s', state, '--pre-stop', 'true', '--post-stop', 'true']
  const r = run('unshare', [...argv, '--', 'touch', marker])
  expect(r.status, r.stderr).toBe(2)
  const errors = r.stderr.split('\n').filter((l) => l.includes('error:'))
  expect(errors).toHaveLength(1)
  expect(errors[0]).toMatch(/stop timeout -2\.0 s = grace 10 s − snapshot reserve 2\.0 s .* − hooks 10 s \(1 pre-stop and 1 post-stop, 5 s each\): under 1 s/)
  expect(errors[0]).toMatch(/at least 13 s/)
  expect(fs.existsSync(marker)).toBe(false)
  const ok = run('unshare', [...argv, '--stop-timeout', '1', '--', 'touch', marker])
  expect(ok.status, ok.stderr).toBe(0)
  expect(fs.existsSync(marker)).toBe(true)
})

test('under half the grace: a warning', () => {
  const state = stateDir()
  const r = run('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', node, shmkeepBin, 'run', '-s', state, '--grace', '3', '--', 'true'])
  expect(r.status, r.stderr).toBe(0)
  expect(r.stderr).toMatch(/warning: the app gets 1\.0 s to stop, under half of the 3 s grace period/)
  expect(r.stderr).not.toMatch(/twice the no final/)
})

test('the final snapshot waits for the lock only as long as the grace lasts, and names the holder (exit 124)', async () => {
  const state = stateDir()
  const c = container(state, [L, 'serve', '0x5a00'], ['--grace', '4'])
  await c.waitFor(/app started/)
  const holder = holdLock(state)
  await locked(state)
  const r = await c.stop(30) // docker stop -t 30: only shmkeep's own bound ends the wait
  expect(r.status, r.stderr).toBe(124)
  // The holder runs in another PID namespace: /proc/locks there does not show it.
  expect(r.stderr, r.stderr).toMatch(/the state dir's lock was not free within the \d+\.\d s left before SIGKILL; held by no process visible here \(one in another PID namespace/)
  expect(r.stderr.match(/error:/g)).toHaveLength(1)
})

test('a final snapshot cut off by SIGKILL is remembered: the next start reserves more', async () => {
  const state = stateDir()
  const c = container(state, [L, 'serve', '0x5a01'], ['--grace', '10'])
  await c.waitFor(/app started/)
  holdLock(state)
  await locked(state)
  await c.signal('SIGTERM')
  await c.waitFor(/final snapshot: \d+\.\d s left before SIGKILL/)
  c.child.kill('SIGKILL') // the orchestrator's SIGKILL, during the final snapshot's wait
  await c.exited
  expect(fs.existsSync(path.join(state, 'STOPPING'))).toBe(true)
  for (const f of cleanup.splice(1)) f() // let go of the lock
  const next = run('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', node, shmkeepBin, 'run', '-s', state, '--grace', '30', '--', 'true'])
  expect(next.status, next.stderr).toBe(0)
  const m = /snapshot reserve (\d+\.\d) s \([^)]*the last final snapshot was cut off by SIGKILL after (\d+\.\d) s: twice that\)/.exec(next.stderr)
  expect(m, next.stderr).not.toBeNull()
  expect(Number(m![1])).toBeGreaterThan(2)
  expect(fs.existsSync(path.join(state, 'STOPPING'))).toBe(false)
})
