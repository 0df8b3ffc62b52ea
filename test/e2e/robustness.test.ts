/**
 * What a review of the code found, from the operator's side: a checkpoint
 * never freezes the app while another writer holds the state dir; pins work
 * with Docker's capabilities; an unreadable RESTORING record (a crashed host)
 * does not block the next start.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'
import { runNode } from '../helpers'
import { DOCKER_BOUNDING, realRoot } from '../snapkit'
import { Container, legacyApp } from './container'

const dirs: string[] = []
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-robust-'))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function state(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
}

test('a checkpoint is skipped, the app never frozen, while another writer holds the state dir', async () => {
  const stateDir = tmp()
  const c = Container.shmkeep(stateDir, [legacyApp, 'serve', '0x7100'], ['--checkpoint-interval', '0.1', '--freeze', 'sigstop'])
  await c.waitFor(/checkpoint gen-000000000001/)
  // An operator's `shmkeep snapshot` holds the lock for a while.
  const holder = spawn('flock', [path.join(stateDir, 'LOCK'), 'sleep', '1.5'], { stdio: 'ignore' })
  await new Promise((r) => setTimeout(r, 100))
  const pid1 = await c.pid1()
  const app = Number(fs.readFileSync(`/proc/${pid1}/task/${pid1}/children`, 'utf8').trim().split(/\s+/)[0])
  const seen = new Set<string>()
  const until = Date.now() + 1200
  while (Date.now() < until) {
    seen.add(state(app))
    await new Promise((r) => setTimeout(r, 5))
  }
  await new Promise<void>((r) => holder.on('exit', () => r()))
  await c.waitFor(/checkpoint skipped: another writer holds the state dir/)
  const r = await c.stop(10)
  expect(r.status, r.stderr).toBe(0)
  expect([...seen]).not.toContain('T')
}, 30_000)

test.skipIf(!realRoot)('with Docker\'s capabilities, shm.attach as the owner reads a 0600 segment of uid 1000 (what pins need)', () => {
  const r = runNode(
    `const { shm } = lib
     const id = shm.get(0x7200, { size: 4096, create: true, mode: 0o600, uid: 1000, gid: 1000 })
     const caps = require('fs').readFileSync('/proc/self/status', 'utf8').match(/CapEff:\\s*(\\w+)/)[1]
     let asRoot
     try { shm.attach(id, { readonly: true }) } catch (e) { asRoot = e.code }
     const b = shm.attach(id, { readonly: true, uid: 1000, gid: 1000 })
     console.log(JSON.stringify({ caps, asRoot, length: b.length }))`,
    { prefix: ['unshare', '--ipc', 'setpriv', `--bounding-set=${DOCKER_BOUNDING}`, '--inh-caps=-all'] },
  )
  expect(r.status, r.stderr).toBe(0)
  // CAP_IPC_OWNER (bit 15) is not in Docker's set.
  expect((BigInt('0x' + r.json.caps) >> 15n) & 1n).toBe(0n)
  expect(r.json.asRoot).toBe('EACCES')
  expect(r.json.length).toBe(4096)
})

test('an unreadable RESTORING record (a host crash mid-restore) does not block the next start', async () => {
  const stateDir = tmp()
  fs.writeFileSync(path.join(stateDir, 'RESTORING'), '')
  const r = await Container.shmkeep(stateDir, [legacyApp, 'exit', '0']).exited
  expect(r.status, r.stderr).toBe(0)
  expect(r.stderr).toMatch(/removed an unreadable RESTORING record/)
  expect(fs.existsSync(path.join(stateDir, 'RESTORING'))).toBe(false)
}, 30_000)

test('the app learns from its environment that run takes the snapshot, and its stop timeout', async () => {
  const stateDir = tmp()
  const r = await Container.shmkeep(stateDir, ['/bin/sh', '-c', 'echo "run=$SHMKEEP_RUN stop=$SHMKEEP_STOP_TIMEOUT"'], ['--grace', '12', '-q']).exited
  expect(r.status, r.stderr).toBe(0)
  // As PID 1 of the container, run's pid is 1; 12 s grace − 2 s reserve = 10 s.
  expect(r.stdout.trim()).toBe('run=1 stop=10')
}, 30_000)
