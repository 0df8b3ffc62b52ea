/**
 * native/common.h's ThreadIdentity: a thread that took another identity for
 * one call and cannot take its own back must end the process (SIGABRT, one
 * line saying why), never go on serving calls as another user. The failure is
 * injected with strace into the second setresuid (the switch back).
 */
import path from 'node:path'
import { expect, test } from 'vitest'
import { have, root, run } from './helpers'

const script = `
  const { shm } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
  const id = shm.get(0x74690001, { size: 4096, create: true, mode: 0o600 })
  try {
    shm.set(id, { mode: 0o640, asUid: 1000, asGid: 1000 }) // as uid 1000: refused, and back to root
  } catch {}
  shm.remove(id)
  console.log('still running as euid ' + process.geteuid())`

const asRoot = process.getuid?.() === 0
const why = !asRoot ? 'needs root (to act as another uid)' : !have('strace') ? 'strace is not installed' : ''

test.skipIf(why !== '')(`a failed switch back to the thread's own identity aborts the process${why ? ` (skipped: ${why})` : ''}`, () => {
  const strace = (inject: string[]) => run('sh', ['-c', 'ulimit -c 0; exec "$@"', 'sh', 'strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=setresuid', ...inject, process.execPath, '-e', script])
  const control = strace([])
  expect(control.status, control.stderr).toBe(0)
  expect(control.stdout).toBe('still running as euid 0\n')

  const failed = strace(['-e', 'inject=setresuid:error=EPERM:when=2'])
  expect(failed.signal ?? failed.status, failed.stderr).toSatisfy((s: unknown) => s === 'SIGABRT' || s === 134)
  expect(failed.stdout).toBe('')
  expect(failed.stderr).toMatch(/^shmkeep: fatal: cannot take this thread's own identity back \(setresuid: Operation not permitted\); aborting/m)
})
