/**
 * `docker run -it`: with a terminal on stdin, the app runs in its own process
 * group and that group is the terminal's foreground group (as tini does), so
 * Ctrl-C reaches the app once and it is never stopped by SIGTTOU/SIGTTIN.
 * Without a terminal the app still has its own group (setpgid, not setsid:
 * same session).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'
import { have, root, run } from '../helpers'

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

const probe = `echo pid=$$ pgid=$(ps -o pgid= -p $$ | tr -d ' ') tpgid=$(ps -o tpgid= -p $$ | tr -d ' ') sid=$(ps -o sid= -p $$ | tr -d ' ') parentsid=$(ps -o sid= -p $PPID | tr -d ' ')`

function shmkeepRun(state: string): string[] {
  return [process.execPath, path.join(root, 'bin', 'shmkeep.js'), 'run', '-q', '-s', state, '--snapshot-on-exit', 'never', '--', 'sh', '-c', probe]
}

function parse(out: string): Record<string, number> {
  return Object.fromEntries([...out.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], Number(m[2])]))
}

test.skipIf(!have('script') || !have('ps'))('with a terminal, the app leads its own process group and it is the foreground group', () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-tty-'))
  dirs.push(state)
  const cmd = shmkeepRun(state).map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
  const r = run('script', ['-qec', `unshare --ipc ${cmd}`, '/dev/null'])
  const v = parse(r.stdout.replace(/\r/g, ''))
  expect(v.pid, r.stdout + r.stderr).toBeGreaterThan(0)
  expect(v.pgid).toBe(v.pid)
  expect(v.tpgid).toBe(v.pid)
  // setpgid, not setsid: the app stays in shmkeep's session.
  expect(v.sid).toBe(v.parentsid)
})

test.skipIf(!have('ps'))('without a terminal, the app still leads its own process group', () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-tty-'))
  dirs.push(state)
  const [cmd, ...args] = shmkeepRun(state)
  const r = run('unshare', ['--ipc', cmd!, ...args])
  const v = parse(r.stdout)
  expect(v.pgid, r.stdout + r.stderr).toBe(v.pid)
  expect(v.sid).toBe(v.parentsid)
})
