/**
 * `shmkeep run` warns at start, once, when it sits under a shell that will
 * not pass `docker stop`'s TERM on (the shell form), and not otherwise: real
 * dash, bash and tini as PID 1 of unshare containers (a new PID namespace).
 * The app is `true`: the run starts, restores nothing, snapshots nothing
 * (no segments in the container's fresh IPC namespace) and exits.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { have, run } from '../helpers'
import { Container, shmkeepBin } from './container'

let tmp: string
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-shellform-'))
})
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

let n = 0
/** The shmkeep run command line, as a shell would be given it. */
function runLine(): string {
  const state = path.join(tmp, `state-${++n}`)
  fs.mkdirSync(state, { mode: 0o700 }) // run never creates its state dir (a volume is mounted there)
  return `'${process.execPath}' '${shmkeepBin}' run --state-dir '${state}' -- true`
}
const warningLines = (stderr: string) => stderr.split('\n').filter((l) => /shmkeep: warning: shmkeep runs under a shell/.test(l))

async function inContainer(argv: string[]) {
  const r = await Container.start(argv).exited
  expect(r.status, r.stderr).toBe(0)
  expect(r.stderr).toMatch(/app exited with status 0/)
  return r
}

const tini = ['/usr/bin/tini', '/usr/bin/tini-static', '/sbin/tini'].find((f) => fs.existsSync(f))
const noTini = tini ? '' : 'tini is not installed (apt-get install tini)'

describe('the shell form is detected', () => {
  test('dash -c "shmkeep run …" as PID 1: one warning naming dash, the problem and the fix', async (ctx) => {
    if (!have('dash')) ctx.skip('no dash here')
    const r = await inContainer(['dash', '-c', runLine()])
    const lines = warningLines(r.stderr)
    expect(lines, r.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/under a shell \(dash\) that is PID 1 and does not pass TERM on/)
    expect(lines[0]).toMatch(/nothing is saved/)
    expect(lines[0]).toMatch(/exec form, ENTRYPOINT \["shmkeep", "run", …\].*`exec shmkeep run …`/)
  })

  test('bash as PID 1 that stays (a command after shmkeep): warned too', async (ctx) => {
    if (!have('bash')) ctx.skip('no bash here')
    const r = await inContainer(['bash', '-c', `${runLine()}; echo done`])
    expect(warningLines(r.stderr), r.stderr).toHaveLength(1)
    expect(r.stderr).toMatch(/under a shell \(bash\) that is PID 1/)
  })

  test('tini -- dash -c "shmkeep run …": the shell between the init and shmkeep is named', async (ctx) => {
    if (noTini) ctx.skip(noTini)
    if (!have('dash')) ctx.skip('no dash here')
    const r = await inContainer([tini!, '--', 'dash', '-c', runLine()])
    const lines = warningLines(r.stderr)
    expect(lines, r.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/under a shell \(dash, pid \d+\) between tini(-static)? and shmkeep/)
  })
})

describe('no false warning', () => {
  test('bash -c "shmkeep run …" (bash execs a single command: shmkeep is PID 1)', async (ctx) => {
    if (!have('bash')) ctx.skip('no bash here')
    const r = await inContainer(['bash', '-c', runLine()])
    expect(warningLines(r.stderr), r.stderr).toEqual([])
  })

  test('shmkeep run as PID 1 (the exec form)', async () => {
    const r = await inContainer(['sh', '-c', `exec ${runLine()}`])
    expect(warningLines(r.stderr), r.stderr).toEqual([])
  })

  test('tini -- shmkeep run (docker run --init)', async (ctx) => {
    if (noTini) ctx.skip(noTini)
    const r = await inContainer([tini!, '--', 'sh', '-c', `exec ${runLine()}`])
    expect(warningLines(r.stderr), r.stderr).toEqual([])
  })

  test('a dash script that traps TERM and passes it on', async (ctx) => {
    if (!have('dash')) ctx.skip('no dash here')
    const r = await inContainer(['dash', '-c', `trap 'kill -TERM $pid' TERM; ${runLine()} & pid=$!; wait $pid`])
    expect(warningLines(r.stderr), r.stderr).toEqual([])
  })

  test('under a shell that is not PID 1, with no init above it (a developer’s terminal, a script run by hand)', (ctx) => {
    if (!have('dash')) ctx.skip('no dash here')
    const r = run('dash', ['-c', runLine()])
    expect(r.status, r.stderr).toBe(0)
    expect(warningLines(r.stderr), r.stderr).toEqual([])
  })
})
