/**
 * Every kind of IPC state of one legacy server across `docker stop` /
 * `docker start` semantics in a real OCI runtime (test/e2e/runc.ts: Debian's
 * runc, Docker's 14 capabilities, private IPC/PID/mount namespaces, the
 * /dev/shm tmpfs and /dev/mqueue that runc mounts): test/fixtures/guarded.c
 * guards its SysV segment with a semaphore set, queues jobs in a SysV message
 * queue and counts in a POSIX shm object. shmkeep is PID 1 (the Dockerfile's
 * exec-form ENTRYPOINT), so POSIX shm is taken by default.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { binDir } from '../helpers'
import { Runc, STATE_IN_IMAGE } from './runc'

const GRACE = 3
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-kinds-runc-'))
let runc: Runc | undefined
let problem = ''

beforeAll(() => {
  // Static where libc.a is installed (the rootfs then needs no libraries of the host).
  const app = path.join(tmp, 'guarded')
  const built = spawnSync('cc', ['-O2', '-static', '-o', app, path.join(__dirname, '..', 'fixtures', 'guarded.c')])
  const r = Runc.setUp(path.join(tmp, 'runc'), { app: built.status === 0 ? app : path.join(binDir, 'guarded') })
  runc = r.runc
  problem = r.problem ?? ''
  if (problem) console.warn(`kinds-runc.test.ts: skipped: ${problem}`)
}, 300_000)

afterAll(() => {
  runc?.cleanup()
  fs.rmSync(tmp, { recursive: true, force: true })
})

const entrypoint = (cmd: string) => ['/usr/local/bin/shmkeep', 'run', '--state-dir', STATE_IN_IMAGE, '--grace', String(GRACE), '--', '/app/server', cmd]

describe('in runc with Docker’s capabilities: a semaphore-guarded segment, a message queue and a POSIX shm object', () => {
  test('all three survive two stop/start cycles; the lock comes back free', async (ctx) => {
    if (problem || !runc) return ctx.skip(problem)
    const state = path.join(tmp, 'state')
    for (let i = 1; i <= 2; i++) {
      const c = runc.start({ args: entrypoint('serve'), stateDir: state })
      await c.waitFor(new RegExp(`serve: count=${i}\\b|busy`))
      expect(c.stdout).toMatch(`serve: count=${i}`)
      if (i > 1) expect(c.stderr).toMatch(/restored 1 segment\(s\), 1 semaphore set\(s\), 1 message queue\(s\), 1 POSIX shm object\(s\) from gen-/)
      const stopped = await c.stop(GRACE)
      expect(stopped.killed, stopped.stderr).toBe(false)
      expect(stopped.status, stopped.stderr).toBe(0)
      expect(stopped.stderr).toMatch(/POSIX shm objects from \/dev\/shm \(tmpfs of 64\.0 MiB/)
      expect(stopped.stderr).toMatch(/snapshot gen-\d+: 1 segment\(s\), 1 semaphore set\(s\), 1 message queue\(s\), 1 POSIX shm object\(s\)/)
    }
    const get = await runc.run({ args: entrypoint('get'), stateDir: state })
    expect(get.status, get.stderr).toBe(0)
    expect(get.stdout.trim().split('\n')).toEqual(['letters ab', 'count 2 2', 'sem 1', '1 job 1', '2 job 2'])
  })
})
