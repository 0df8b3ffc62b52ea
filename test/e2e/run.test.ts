/**
 * `shmkeep run` end to end: the container's entrypoint, as PID 1 of a
 * "container" (test/e2e/container.ts: a new IPC and PID namespace; the state
 * dir is on the host, like a volume) or as the child of tini. The app is the
 * C legacy_app of test/fixtures/legacy_app.c. Stops are what `docker stop`
 * does: TERM to PID 1, then KILL after the grace period.
 *
 * Every container has an IPC namespace of its own, so the keys used here
 * (0x162e, 0x1234, ...) never meet another test's. Each test has a scratch
 * folder (fs.mkdtempSync under os.tmpdir(), prefix shmkeep-e2e-) holding the
 * state dir ("state") and the apps' files; it is removed after the test, and
 * any container still running is killed.
 *
 * No test asserts a duration: where something must have happened "by now",
 * the test waits for the log line or the /proc fact that says it did.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { have, run } from '../helpers'
import { Container, legacyApp as L, shmkeepBin, type Exited } from './container'

const node = process.execPath
const ABC = 'a b c d e f g h i j k l m n o p q r s t u v w x y z'
/** `docker stop -t` used with Container.stop: only reached when something hangs. */
const DOCKER_GRACE = 20
/** shmkeep's --grace: a stop timeout of 1 s (3 − the 2 s snapshot reserve). */
const GRACE = ['--grace', '3']

const hasTini = have('tini')
if (!hasTini) console.warn('run.test.ts: tini is not installed (apt-get install tini): the tini test is skipped')

// ---------------------------------------------------------------- scaffolding

let scratch: string[] = []
let containers: Container[] = []

afterEach(() => {
  for (const c of containers.splice(0)) {
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
  }
  for (const dir of scratch.splice(0)) {
    run('chattr', ['-R', '-i', dir]) // the chattr test may have left it immutable
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

/** A scratch folder for one test; its state dir is `${work}/state`. */
function workDir(): { work: string; state: string } {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-e2e-'))
  scratch.push(work)
  // Made here, as a volume would be: shmkeep run never creates its state dir.
  fs.mkdirSync(path.join(work, 'state'), { mode: 0o700 })
  return { work, state: path.join(work, 'state') }
}

/** `shmkeep run --state-dir STATE --grace 3 [args] -- app...` as PID 1 of a new container. */
function shmkeep(state: string, app: string[], runArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Container {
  const c = Container.shmkeep(state, app, [...GRACE, ...runArgs], env)
  containers.push(c)
  return c
}

/** Any argv as PID 1 of a new container. */
function start(argv: string[], env: NodeJS.ProcessEnv = {}): Container {
  const c = Container.start(argv, env)
  containers.push(c)
  return c
}

/** `shmkeep run ... -- app` in a container, waited for (the app ends on its own). */
function runToEnd(state: string, app: string[], runArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Exited> {
  return shmkeep(state, app, runArgs, env).exited
}

/** A shell command line for `sh -c` (every word single-quoted). */
function shq(...words: string[]): string {
  return words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ')
}

/** Run `sh -c script` under `prefix` (async: the event loop keeps going). */
function sh(prefix: string[], script: string): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(prefix[0]!, [...prefix.slice(1), 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ status: code ?? 128 + os.constants.signals[signal!], stdout, stderr })
    })
  })
}

async function waitUntil<T>(what: string, probe: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const v = probe()
    if (v !== undefined && v !== false) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// ------------------------------------------------------------ the state dir

/** A checked-JSON state file: header line, then JSON. */
function readChecked(file: string): any {
  const text = fs.readFileSync(file, 'utf8')
  expect(text).toMatch(/^shmkeep-json 2 /)
  return JSON.parse(text.slice(text.indexOf('\n') + 1))
}

function generations(state: string): string[] {
  return fs
    .readdirSync(state)
    .filter((n) => /^gen-\d{12}$/.test(n))
    .sort()
}

function generation(state: string, name: string): any {
  return readChecked(path.join(state, name, 'GENERATION'))
}

function currentName(state: string): string {
  return fs.readFileSync(path.join(state, 'CURRENT'), 'utf8')
}

/** Every file and folder under `dir` with a hash of each file's bytes. */
function treeOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name)
      if (e.isDirectory()) {
        out[r + '/'] = 'dir'
        walk(r)
      } else {
        out[r] = createHash('sha256').update(fs.readFileSync(path.join(dir, r))).digest('hex')
      }
    }
  }
  walk('')
  return out
}

// --------------------------------------------------------------- /proc views

interface Proc {
  pid: number
  ppid: number
  state: string
  /** NSpid: the pid in each PID namespace, outermost first. */
  nspid: number[]
  cmdline: string
}

function readProc(pid: number): Proc | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? ''
    let cmdline = ''
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')
    } catch {
      // a zombie, or gone
    }
    return { pid, ppid: Number(field('PPid')), state: field('State').charAt(0), nspid: field('NSpid').split(/\s+/).map(Number), cmdline }
  } catch {
    return undefined
  }
}

/** Processes (host pids) whose PPid chain leads to `pid1` — the container's processes, zombies included. */
function containerProcs(pid1: number): Proc[] {
  const all = new Map<number, Proc>()
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue
    const p = readProc(Number(n))
    if (p) all.set(p.pid, p)
  }
  const inside = (p: Proc): boolean => {
    for (let q: Proc | undefined = p, hops = 0; q && hops < 64; q = all.get(q.ppid), hops++) {
      if (q.pid === pid1) return true
    }
    return false
  }
  return [...all.values()].filter(inside)
}

/** Whether a process's maps show an attachment of the SysV segment with this key. */
function attachedTo(pid: number, key: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes(`/SYSV${key.toString(16).padStart(8, '0')}`)
  } catch {
    return false
  }
}

/** Wait until some process of the container matches. */
async function waitForProc(c: Container, what: string, match: (p: Proc) => boolean): Promise<Proc> {
  const pid1 = await c.pid1()
  return waitUntil(what, () => {
    if (c.child.exitCode !== null || c.child.signalCode !== null) throw new Error(`the container exited before ${what}; stderr:\n${c.stderr}`)
    return containerProcs(pid1).find(match)
  })
}

/** The app's pid as shmkeep logs it (in the container's PID namespace). */
function appPid(log: string): number {
  const m = /app started: .* \(pid (\d+)\)/.exec(log)
  if (!m) throw new Error(`no "app started" line in:\n${log}`)
  return Number(m[1])
}

// ==================================================================== tests

describe('state survives a container restart', () => {
  test('a writer puts a..z into 0x162e and exits; the next container reads a b c … z', async () => {
    const { state } = workDir()
    const first = await runToEnd(state, [L, 'write-abc'])
    expect(first.status, first.stderr).toBe(0)
    expect(generations(state)).toHaveLength(1)
    const gen = generation(state, generations(state)[0]!)
    expect(gen.reason).toBe('exit')
    expect(gen.segments.map((s: any) => s.key)).toEqual(['0x0000162e'])

    const second = await runToEnd(state, [L, 'read-abc'])
    expect(second.status, second.stderr).toBe(0)
    expect(second.stdout.trim()).toBe(ABC)
    expect(second.stderr).toMatch(/restored 1 segment\(s\) from gen-000000000001/)
  })

  test('the same when the container is stopped (docker stop: TERM to PID 1) instead of ending', async () => {
    const { state } = workDir()
    // write-abc, then a long-running app on another key: the container is stopped, not ended.
    const c = shmkeep(state, ['sh', '-c', `${shq(L, 'write-abc')} && exec ${shq(L, 'serve', '0x1234')}`])
    await waitForProc(c, 'serve to attach 0x1234', (p) => attachedTo(p.pid, 0x1234))
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    const gen = generation(state, currentName(state).trim())
    expect(gen.reason).toBe('stop')
    expect(gen.clean).toBe(true)

    const next = await runToEnd(state, [L, 'read-abc'])
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.trim()).toBe(ABC)
  })

  test('a long-running app writes its final state on TERM: the next container sees exactly that state', async () => {
    const { state } = workDir()
    const c = shmkeep(state, [L, 'serve', '0x1234'])
    await waitForProc(c, 'serve to attach 0x1234', (p) => attachedTo(p.pid, 0x1234))
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app/)

    const next = await runToEnd(state, ['sh', '-c', `${shq(L, 'dump', '0x1234', '0', '63')}; ${shq(L, 'dump', '0x1234', '64', '63')}`])
    expect(next.status, next.stderr).toBe(0)
    const [counter, final] = next.stdout.trim().split('\n')
    const n = /^final:(\d+)$/.exec(final ?? '')?.[1]
    expect(n, next.stdout).toBeDefined()
    expect(Number(n)).toBeGreaterThan(0)
    // The counter it last wrote and the final record agree: the snapshot came after the app's last write.
    expect(counter).toBe(`count:${n}`)
  })

  test('an app that ignores TERM is killed after --stop-timeout; the snapshot is still taken; status 137', async () => {
    const { state } = workDir()
    const c = shmkeep(state, ['sh', '-c', `${shq(L, 'write-abc')} && exec ${shq(L, 'ignore-term')}`], ['--stop-timeout', '1'])
    await waitForProc(c, 'ignore-term to run', (p) => p.cmdline === `${L} ignore-term`)
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(137)
    // The wording of this warning has changed over time; it names the stop timeout and SIGKILL.
    expect(stopped.stderr).toMatch(/(did not stop within|still running after) 1\.0 s.*SIGKILL/)
    // The SIGKILL line says what it made of the app's status, and the exit line agrees.
    expect(stopped.stderr).toMatch(/killed with SIGKILL: \d+ \(.*legacy_app ignore-term\); the app ended with status 137 \(SIGKILL\)\n/)
    expect(stopped.stderr).toMatch(/app exited with status 137 \(SIGKILL\)/)
    const gen = generation(state, currentName(state).trim())
    expect(gen.reason).toBe('stop')
    expect(gen.clean).toBe(false) // killed: not a clean stop

    const next = await runToEnd(state, [L, 'read-abc'])
    expect(next.stdout.trim()).toBe(ABC)
  })
})

describe('exit status', () => {
  test('the app’s exit code passes through: exit 3 → 3 (and the exit snapshot is taken)', async () => {
    const { state } = workDir()
    const r = await runToEnd(state, [L, 'exit', '3'])
    expect(r.status, r.stderr).toBe(3)
    expect(r.stderr).toMatch(/app exited with status 3/)
    expect(generations(state)).toHaveLength(1)
  })

  test('killed by SIGSEGV → 139', async () => {
    const { state } = workDir()
    const r = await runToEnd(state, [L, 'segv'])
    expect(r.status, r.stderr).toBe(139)
    expect(r.stderr).toMatch(/app exited with status 139 \(SIGSEGV\)/)
  })

  test('a failed final snapshot (state dir made immutable with chattr +i) → 124, the app’s status in the log', async (ctx) => {
    const { work, state } = workDir()
    const probe = path.join(work, 'probe')
    fs.mkdirSync(probe)
    if (run('chattr', ['+i', probe]).status !== 0) ctx.skip('chattr +i does not work here (no CAP_LINUX_IMMUTABLE, or the file system has no immutable flag)')
    run('chattr', ['-i', probe])
    // The app makes the state dir immutable just before it exits: restore and start went through.
    const r = await runToEnd(state, ['sh', '-c', `${shq(L, 'write-abc')} && chattr +i ${shq(state)}`])
    run('chattr', ['-i', state])
    expect(r.status, r.stderr).toBe(124)
    expect(r.stderr).toMatch(/snapshot failed, no generation written .*\(the app exited with status 0\)/)
    expect(generations(state)).toEqual([])
  })

  test('a failed final snapshot (state dir a read-only bind mount) → 124, the app’s status in the log', async () => {
    const { state } = workDir()
    // The container has a mount namespace of its own (--mount-proc): the app
    // remounts the state dir read-only there, then exits; the host never sees it.
    const r = await runToEnd(state, ['sh', '-c', `${shq(L, 'write-abc')} && mount --bind -o ro ${shq(state)} ${shq(state)}`])
    expect(fs.readdirSync(state)).not.toContain('.tmp-gen-000000000001')
    expect(generations(state)).toEqual([])
    expect(r.stderr).toMatch(/snapshot failed.*\(the app exited with status 0\)/)
    expect(r.status, r.stderr).toBe(124)
  })

  test('a command that does not exist → 127 with a clear message; the app is not started', async () => {
    const { state } = workDir()
    const r = await runToEnd(state, ['no-such-command-shmkeep'])
    expect(r.status, r.stderr).toBe(127)
    expect(r.stderr).toMatch(/cannot run no-such-command-shmkeep: not found in PATH/)
    expect(r.stderr).not.toMatch(/app started/)

    const r2 = await runToEnd(state, ['/nonexistent/dir/app'])
    expect(r2.status, r2.stderr).toBe(127)
    expect(r2.stderr).toMatch(/cannot run \/nonexistent\/dir\/app: not found/)
  })

  test('a file that is not executable → 126 with a clear message', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'not-executable')
    fs.writeFileSync(file, '#!/bin/sh\nexit 0\n', { mode: 0o644 })
    const r = await runToEnd(state, [file])
    expect(r.status, r.stderr).toBe(126)
    expect(r.stderr).toContain(`cannot run ${file}: ${file} is not executable`)
    expect(r.stderr).not.toMatch(/app started/)
  })
})

describe('signals', () => {
  /** Lines "NAME pid" the signals app logged (without "ready"). */
  const received = (file: string) =>
    fs
      .readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .filter((l) => l && l !== 'ready')
      .map((l) => {
        const [name, pid] = l.split(' ')
        return { name: name!, pid: Number(pid) }
      })

  const waitForLine = (file: string, re: RegExp) => waitUntil(`${re} in ${file}`, () => fs.existsSync(file) && re.test(fs.readFileSync(file, 'utf8')))

  test('USR1 and HUP sent to the container reach the app; TERM stops it', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'signals')
    const c = shmkeep(state, [L, 'signals', file])
    await waitForLine(file, /^ready$/m)
    await c.signal('SIGUSR1')
    await waitForLine(file, /^USR1 /m)
    await c.signal('SIGHUP')
    await waitForLine(file, /^HUP /m)
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(received(file).map((s) => s.name)).toEqual(['USR1', 'HUP', 'TERM'])
    expect(new Set(received(file).map((s) => s.pid)).size).toBe(1)
    expect(stopped.stderr).toMatch(/forwarded SIGUSR1 to the app \(pid \d+\)/)
    expect(stopped.stderr).toMatch(/forwarded SIGHUP to the app \(pid \d+\)/)
  })

  test('--rewrite TERM:QUIT delivers QUIT at stop', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'signals')
    const c = shmkeep(state, [L, 'signals', file], ['--rewrite', 'TERM:QUIT'])
    await waitForLine(file, /^ready$/m)
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(received(file).map((s) => s.name)).toEqual(['QUIT'])
    expect(stopped.stderr).toMatch(/forwarded SIGTERM as SIGQUIT to the app/)
  })

  test('--signal-group: USR1 (and TERM) reach the app’s forked child too', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'signals')
    const c = shmkeep(state, [L, 'signals', file, 'fork'], ['--signal-group'])
    await waitForLine(file, /^ready$/m)
    await c.signal('SIGUSR1')
    await waitUntil('USR1 in both processes', () => received(file).filter((s) => s.name === 'USR1').length === 2)
    const stopped = await c.stop(DOCKER_GRACE)
    // The child got TERM too and ended, so the app's wait() returned: a clean exit.
    expect(stopped.status, stopped.stderr).toBe(0)
    const usr1 = received(file).filter((s) => s.name === 'USR1')
    expect(new Set(usr1.map((s) => s.pid)).size).toBe(2)
    expect(received(file).filter((s) => s.name === 'TERM')).toHaveLength(2)
    expect(stopped.stderr).toMatch(/forwarded SIGUSR1 to the app's process group/)
  })

  test('without --signal-group the forked child does not get USR1', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'signals')
    const c = shmkeep(state, [L, 'signals', file, 'fork'], ['--stop-timeout', '1'])
    await waitForLine(file, /^ready$/m)
    await c.signal('SIGUSR1')
    await waitForLine(file, /^USR1 /m)
    // The pid of the app itself, from the container's own view.
    const pid = appPid(c.stderr)
    const stopped = await c.stop(DOCKER_GRACE)
    expect(received(file).filter((s) => s.name === 'USR1')).toEqual([{ name: 'USR1', pid }])
    expect(stopped.stderr).toMatch(/forwarded SIGUSR1 to the app \(pid \d+\)/)
    expect(stopped.stderr).not.toMatch(/process group/)
    // (What TERM does to the child at stop is not this test's business: as PID 1,
    // shmkeep now stops every process of the container, with or without --signal-group.)
  })
})

describe('PID 1 duties', () => {
  /** Zombies (state Z) of the container whose pid inside it is `nspid`. */
  const zombies = (pid1: number, nspid: number) => containerProcs(pid1).filter((p) => p.nspid.at(-1) === nspid && p.nspid.length > 1 && p.state === 'Z')

  // scan: as on a kernel without CONFIG_PROC_CHILDREN (no /proc/<pid>/task/<tid>/children), forced by a variable for tests.
  for (const children of ['task', 'scan'] as const) {
    test(`an orphaned grandchild inside the container is reaped: no zombie stays (children found by ${children === 'task' ? '/proc/self/task/*/children' : 'scanning /proc/*/stat, said once'})`, async () => {
      const { work, state } = workDir()
      const file = path.join(work, 'orphan')
      const c = shmkeep(state, [L, 'orphan', file], ['--verbose'], children === 'scan' ? { SHMKEEP_TEST_PROC_CHILDREN: 'scan' } : {})
      const pid1 = await c.pid1()
      const grandchild = await waitUntil('the orphan’s pid', () => {
        const t = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
        return t.endsWith('\n') ? Number(t) : undefined
      })
      const since = Date.now()
      // It sleeps 1 s, exits, and must then be reaped by PID 1 (shmkeep).
      await c.waitFor(new RegExp(`reaped orphan ${grandchild} \\(status 0\\)`))
      await sleep(Math.max(0, 2000 - (Date.now() - since)))
      expect(zombies(pid1, grandchild)).toEqual([])
      const stopped = await c.stop(DOCKER_GRACE)
      expect(stopped.status, stopped.stderr).toBe(0)
      expect(stopped.stderr.match(/orphans are found by scanning \/proc\/\*\/stat/g) ?? []).toHaveLength(children === 'scan' ? 1 : 0)
    })
  }

  test('(control) the zombie scan does see an orphan that PID 1 does not reap', async () => {
    const { work } = workDir()
    const file = path.join(work, 'orphan')
    // sleep as PID 1 never waits: the orphan stays a zombie.
    const c = start(['sh', '-c', `${shq(L, 'orphan', file)} & exec sleep 60`])
    const pid1 = await c.pid1()
    const grandchild = await waitUntil('the orphan’s pid', () => {
      const t = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
      return t.endsWith('\n') ? Number(t) : undefined
    })
    const zombie = await waitUntil('the orphan to become a zombie', () => zombies(pid1, grandchild)[0])
    expect(zombie.ppid).toBe(pid1)
  })

  test('as PID 1, a setsid daemon that ignores TERM is stopped with the container: TERM, then SIGKILL after the stop timeout, named in the log', async () => {
    // The container stops as a whole before the final snapshot (docker stop
    // would kill the daemon too): nothing is left attached, so the generation
    // is consistent, but not clean (something had to be killed).
    const { state } = workDir()
    const c = shmkeep(state, [L, 'outlive', '0x7777'])
    await c.waitFor(/app started/)
    const app = appPid(c.stderr)
    const daemon = await waitForProc(c, 'the daemon', (p) => p.cmdline === `${L} outlive 0x7777` && p.nspid.at(-1) !== app && attachedTo(p.pid, 0x7777))
    const daemonPid = daemon.nspid.at(-1)!
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(new RegExp(`SIGKILL: .*\\b${daemonPid} \\(.*legacy_app outlive 0x7777\\)`))
    const gen = generation(state, currentName(state).trim())
    expect(gen.consistency).toBe('stopped')
    expect(gen.clean).toBe(false)
    expect(gen.segments.map((s: any) => s.key)).toEqual(['0x00007777'])
  })
})

describe('under tini (shmkeep the child of PID 1)', () => {
  test.skipIf(!hasTini)('tini as PID 1, shmkeep its child: a..z written, the container stopped via TERM to tini, read back next time', async () => {
    const { state } = workDir()
    const entry = (app: string[]) => ['tini', '--', node, shmkeepBin, 'run', '--state-dir', state, ...GRACE, '--', ...app]
    const c = start(entry(['sh', '-c', `${shq(L, 'write-abc')} && exec ${shq(L, 'serve', '0x1234')}`]))
    const pid1 = await c.pid1()
    // PID 1 shows unshare's command line until it has exec'ed tini.
    await waitUntil('tini as PID 1', () => /^tini /.test(readProc(pid1)?.cmdline ?? ''))
    await waitForProc(c, 'serve to attach 0x1234', (p) => attachedTo(p.pid, 0x1234))
    const stopped = await c.stop(DOCKER_GRACE) // TERM to tini, which passes it to shmkeep
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app/)
    expect(stopped.stderr).not.toMatch(/cannot become a child subreaper/)
    expect(generation(state, currentName(state).trim()).reason).toBe('stop')

    const next = await start(entry([L, 'read-abc'])).exited
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.trim()).toBe(ABC)
  })

  test.skipIf(!hasTini)('a setsid daemon that outlives the app and stays attached: the generation is marked live and the log names it', async () => {
    // Under tini, shmkeep is not PID 1 and stops only the app: the daemon
    // (reparented to shmkeep, a child subreaper) is still attached at the snapshot.
    const { state } = workDir()
    const c = start(['tini', '--', node, shmkeepBin, 'run', '--state-dir', state, ...GRACE, '--', L, 'outlive', '0x7777'])
    await c.waitFor(/app started/)
    const app = appPid(c.stderr)
    const daemon = await waitForProc(c, 'the daemon', (p) => p.cmdline === `${L} outlive 0x7777` && p.nspid.at(-1) !== app && attachedTo(p.pid, 0x7777))
    const daemonPid = daemon.nspid.at(-1)!
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(new RegExp(`segment 0x00007777 is still attached by pid ${daemonPid} \\(.*legacy_app outlive 0x7777\\): the generation is marked live \\(may be torn\\)`))
    const gen = generation(state, currentName(state).trim())
    expect(gen.consistency).toBe('live')
    expect(gen.attachers).toEqual([{ key: '0x00007777', pid: daemonPid, command: `${L} outlive 0x7777` }])
    expect(gen.clean).toBe(false)
    expect(gen.segments.map((s: any) => s.key)).toEqual(['0x00007777'])
  })
})

describe('kernel.shm_rmid_forced=1', () => {
  test('(control) without a pin, the segment of an app that exits is gone', async () => {
    const r = await sh(['unshare', '--ipc'], `echo 1 > /proc/sys/kernel/shm_rmid_forced && ${shq(L, 'write-abc')} && ${shq(L, 'read-abc')}`)
    expect(r.stdout.trim()).toBe('no segment at key 0x162e')
  })

  test('run pins the app’s segment, so it is snapshotted although the kernel would destroy it at the app’s exit', async () => {
    const { state } = workDir()
    const argv = [node, shmkeepBin, 'run', '--state-dir', state, ...GRACE, '--verbose', '--', L, 'serve', '0x3456']
    const c = start(['sh', '-c', `echo 1 > /proc/sys/kernel/shm_rmid_forced && exec ${shq(...argv)}`])
    await c.waitFor(/kernel\.shm_rmid_forced is 1/)
    // serve stays attached until TERM: the 1 s scan pins its segment meanwhile.
    await c.waitFor(/pinned segment 0x00003456/)
    const stopped = await c.stop(DOCKER_GRACE)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).not.toMatch(/no segment to save/)
    const gen = generation(state, currentName(state).trim())
    expect(gen.segments.map((s: any) => s.key)).toEqual(['0x00003456'])

    const next = await runToEnd(state, [L, 'dump', '0x3456', '64', '63'])
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.trim()).toMatch(/^final:\d+$/)
  })
})

describe('restore errors', () => {
  /** A state dir with one generation holding a..z, its only .data file damaged. */
  async function damagedState(): Promise<{ work: string; state: string; gen: string }> {
    const { work, state } = workDir()
    const first = await runToEnd(state, [L, 'write-abc'])
    expect(first.status, first.stderr).toBe(0)
    const [gen] = generations(state)
    const data = fs.readdirSync(path.join(state, gen!)).find((n) => n.endsWith('.data'))!
    const fd = fs.openSync(path.join(state, gen!, data), 'r+')
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, 3)
    b[0] ^= 0xff
    fs.writeSync(fd, b, 0, 1, 3)
    fs.closeSync(fd)
    return { work, state, gen: gen! }
  }

  test('a failed restore does not start the app: exit 125, no marker file', async () => {
    const { work, state } = await damagedState()
    const marker = path.join(work, 'started')
    const r = await runToEnd(state, ['sh', '-c', `touch ${shq(marker)}; exec ${shq(L, 'read-abc')}`])
    expect(r.status, r.stderr).toBe(125)
    expect(r.stderr).toMatch(/fails its checksum/)
    expect(r.stderr).toMatch(/The app is not started/)
    expect(r.stderr).not.toMatch(/app started/)
    expect(fs.existsSync(marker)).toBe(false)
  })

  test('--report-file: the failed restore is in the report (its error and what was tried), no app, exit 125', async () => {
    const { work, state } = await damagedState()
    const file = path.join(work, 'report.json')
    const r = await runToEnd(state, [L, 'read-abc'], ['--report-file', file])
    expect(r.status, r.stderr).toBe(125)
    const report = JSON.parse(fs.readFileSync(file, 'utf8'))
    expect(report).toMatchObject({ schema: 'shmkeep.run', version: 2, exitStatus: 125, app: null, snapshot: null })
    expect(report.restore.error).toMatch(/fails its checksum/)
  })

  test('one line per error: the damage is named once (restore.rejected), the failure line points to it', async () => {
    const { state, gen } = await damagedState()
    const r = await runToEnd(state, [L, 'read-abc'])
    expect(r.status, r.stderr).toBe(125)
    expect(r.stderr.match(/fails its checksum/g), r.stderr).toHaveLength(1)
    expect(r.stderr).toMatch(new RegExp(`error: restore failed, nothing restored: no generation verifies \\(${gen}: see above\\)\\. The app is not started`))
  })

  test('a failed restore leaves the state dir as it was (single damaged generation)', async () => {
    const { work, state } = await damagedState()
    const before = treeOf(state)
    const r = await runToEnd(state, ['sh', '-c', `touch ${shq(path.join(work, 'started'))}`])
    expect(r.status, r.stderr).toBe(125)
    expect(treeOf(state)).toEqual(before)
  })

  test('a retry after a failed restore still reports the damage (not a failed rename)', async () => {
    const { state } = await damagedState()
    const first = await runToEnd(state, [L, 'read-abc'])
    expect(first.status, first.stderr).toBe(125)
    expect(first.stderr).toMatch(/fails its checksum/)
    const retry = await runToEnd(state, [L, 'read-abc'])
    expect(retry.status, retry.stderr).toBe(125)
    expect(retry.stderr).not.toMatch(/ENOENT/)
    expect(retry.stderr).toMatch(/fails its checksum/)
  })

  test('--on-restore-error=start starts the app; its snapshot is written beside CURRENT (side: true, CURRENT unchanged)', async () => {
    const { work, state, gen } = await damagedState()
    const current = currentName(state)
    expect(current).toBe(`${gen}\n`)
    const marker = path.join(work, 'started')
    const r = await runToEnd(state, ['sh', '-c', `touch ${shq(marker)} && exec ${shq(L, 'write-abc')}`], ['--on-restore-error=start'])
    // Written beside CURRENT: the app's state was not kept as CURRENT (docs/OPERATIONS.md's exit-code table).
    expect(r.status, r.stderr).toBe(123)
    expect(r.stderr).toMatch(/the app's state was not fully kept \(side\): exit 123 \(the app exited with status 0\)/)
    expect(fs.existsSync(marker)).toBe(true)
    expect(r.stderr).toMatch(/Starting the app anyway \(--on-restore-error=start\)/)
    expect(r.stderr).toMatch(/\(beside CURRENT\)/)
    expect(currentName(state)).toBe(current)
    const side = generations(state).filter((g) => g !== gen)
    expect(side).toHaveLength(1)
    const record = generation(state, side[0]!)
    expect(record.side).toBe(true)
    expect(record.segments.map((s: any) => s.key)).toEqual(['0x0000162e'])
  })
})

describe('a restart inside the same IPC namespace (Kubernetes container restart in its pod)', () => {
  test('the second run keeps the live segments (warm), does not overwrite them, and starts the app', async () => {
    const { state } = workDir()
    const container = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child']
    const runCmd = (...app: string[]) => shq(...container, node, shmkeepBin, 'run', '--state-dir', state, ...GRACE, '--', ...app)
    const script = [
      `${runCmd(L, 'write-abc')}; echo "run1=$?"; echo '--- second run' >&2`,
      // Between the runs the pod's namespace keeps the segment: change it.
      `${shq(L, 'poke', '0x162e', '100', 'marker-between-runs')} || exit 99`,
      `${runCmd('sh', '-c', `${shq(L, 'read-abc')} && ${shq(L, 'dump', '0x162e', '100', '63')}`)}; echo "run2=$?"`,
    ].join('\n')
    const r = await sh(['unshare', '--ipc'], script)
    expect(r.stdout, r.stderr).toContain('run1=0')
    expect(r.stdout, r.stderr).toContain('run2=0')
    const [firstLog, second] = r.stderr.split('--- second run\n')
    expect(firstLog).toMatch(/nothing to restore/)
    expect(second, r.stderr).toMatch(/nothing restored: this IPC namespace already holds the state of gen-000000000001 \(its lineage record is here\)/)
    expect(second).not.toMatch(/restored \d+ segment/)
    expect(second).toMatch(/app started/)
    // The app saw the segment as it was, marker included: nothing overwrote it.
    expect(r.stdout).toContain(`${ABC}\nmarker-between-runs\n`)
    // And the second run's snapshot continues the line (CURRENT moved on).
    expect(currentName(state)).toBe('gen-000000000002\n')
    expect(generation(state, 'gen-000000000002').side).toBe(false)
  })
})

describe('configuration and help', () => {
  test('`shmkeep run --help` shows a Dockerfile', () => {
    const r = run(node, [shmkeepBin, 'run', '--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/Dockerfile/)
    expect(r.stdout).toMatch(/ENTRYPOINT \["shmkeep", "run"/)
    expect(r.stdout).toMatch(/SHMKEEP_STATE_DIR/)
  })

  test('options come from the environment: SHMKEEP_STATE_DIR, SHMKEEP_GRACE', async () => {
    const { state } = workDir()
    const env = { SHMKEEP_STATE_DIR: state, SHMKEEP_GRACE: '7' }
    const first = await start([node, shmkeepBin, 'run', '--', L, 'write-abc'], env).exited
    expect(first.status, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/grace 7 s/)
    expect(generations(state)).toHaveLength(1)
    const next = await start([node, shmkeepBin, 'run', '--', L, 'read-abc'], env).exited
    expect(next.stdout.trim()).toBe(ABC)

    const none = await start([node, shmkeepBin, 'run', '--', L, 'read-abc'], { SHMKEEP_STATE_DIR: '' }).exited
    expect(none.status).toBe(2)
    expect(none.stderr).toMatch(/--state-dir \(or SHMKEEP_STATE_DIR\) is required/)
  })
})

describe('the log', () => {
  /** A state dir with a..z saved, then a container running serve 0x1234, stopped. */
  async function stoppedRun(runArgs: string[]): Promise<Exited> {
    const { state } = workDir()
    const first = await runToEnd(state, [L, 'write-abc'])
    expect(first.status, first.stderr).toBe(0)
    const c = shmkeep(state, [L, 'serve', '0x1234'], runArgs)
    await waitForProc(c, 'serve to attach 0x1234', (p) => attachedTo(p.pid, 0x1234))
    return c.stop(DOCKER_GRACE)
  }

  test('one line per event: restored, app started (pid), signal forwarded, app exited (status), snapshot (segments, bytes, ms)', async () => {
    const r = await stoppedRun([])
    expect(r.status, r.stderr).toBe(0)
    const lines = r.stderr.trim().split('\n')
    expect(lines.every((l) => l.startsWith('shmkeep: ')), r.stderr).toBe(true)
    const one = (re: RegExp) => expect(lines.filter((l) => re.test(l)), `${re}\n${r.stderr}`).toHaveLength(1)
    one(/^shmkeep: restored 1 segment\(s\) from gen-000000000001 \(4\.0 KiB, (\d+ ms|\d+\.\d s)\)$/)
    one(/^shmkeep: app started: .*legacy_app serve 0x1234 \(pid \d+\)$/)
    one(/^shmkeep: forwarded SIGTERM to the app \(pid \d+\)$/)
    one(/^shmkeep: app exited with status 0$/)
    one(/^shmkeep: snapshot gen-000000000002: 2 segment\(s\), 8\.0 KiB in (\d+ ms|\d+\.\d s)$/)
    // In that order.
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l))
    const order = [/restored/, /app started/, /forwarded SIGTERM/, /app exited/, /^shmkeep: snapshot gen/].map(at)
    expect([...order].sort((a, b) => a - b)).toEqual(order)
  })

  test('--log-format=json: every line is JSON with an event field', async () => {
    const r = await stoppedRun(['--log-format=json'])
    expect(r.status, r.stderr).toBe(0)
    const records = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    for (const rec of records) {
      expect(typeof rec.event).toBe('string')
      expect(typeof rec.level).toBe('string')
      expect(typeof rec.msg).toBe('string')
    }
    const byEvent = (e: string) => records.filter((x) => x.event === e)
    expect(byEvent('restore')).toEqual([expect.objectContaining({ generation: 'gen-000000000001', segments: 1, bytes: 4096, ms: expect.any(Number) })])
    expect(byEvent('start')).toEqual([expect.objectContaining({ pid: expect.any(Number) })])
    expect(byEvent('signal')).toEqual([expect.objectContaining({ signal: 'SIGTERM', to: 'SIGTERM' })])
    expect(byEvent('exit')).toEqual([expect.objectContaining({ status: 0 })])
    expect(byEvent('snapshot')).toEqual([expect.objectContaining({ generation: 'gen-000000000002', segments: 2, bytes: 8192, ms: expect.any(Number) })])
  })
})

describe('--report-file', () => {
  test('the report goes to the file, not stdout (the app’s alone): the restore, the app’s end, the final snapshot as restore/snapshot --json have them, the exit status', async () => {
    const { work, state } = workDir()
    const first = await runToEnd(state, [L, 'write-abc'])
    expect(first.status, first.stderr).toBe(0)
    const file = path.join(work, 'report.json')
    const r = await runToEnd(state, ['sh', '-c', `${shq(L, 'read-abc')}; exit 3`], ['--report-file', file])
    expect(r.status, r.stderr).toBe(3)
    expect(r.stdout.trim()).toBe(ABC)
    const report = JSON.parse(fs.readFileSync(file, 'utf8'))
    expect(report).toMatchObject({
      schema: 'shmkeep.run',
      version: 2,
      exitStatus: 3,
      app: { ended: 'exit', status: 3, killed: false, pid: expect.any(Number) },
      restore: { generation: 'gen-000000000001', bytes: 4096, segments: [{ key: '0x0000162e', status: 'restored' }] },
      snapshot: { generation: 'gen-000000000002', outcome: 'saved', current: true, bytes: 4096 },
      checkpoints: { taken: 0, skipped: 0, failed: 0 },
    })
    expect(report.error).toBeUndefined()
    // Replaced atomically: no temporary file stays beside it.
    expect(fs.readdirSync(work).filter((n) => n.startsWith('report'))).toEqual(['report.json'])
  })

  test('a stop: the app’s signal ending and SIGKILL after the stop timeout are in the report', async () => {
    const { work, state } = workDir()
    const file = path.join(work, 'report.json')
    const c = shmkeep(state, ['sh', '-c', `${shq(L, 'write-abc')} && exec ${shq(L, 'ignore-term')}`], ['--stop-timeout', '1', '--report-file', file])
    await waitForProc(c, 'ignore-term to run', (p) => p.cmdline === `${L} ignore-term`)
    const r = await c.stop(DOCKER_GRACE)
    expect(r.status, r.stderr).toBe(137)
    const report = JSON.parse(fs.readFileSync(file, 'utf8'))
    expect(report).toMatchObject({ exitStatus: 137, app: { ended: 'stop', status: 137, signal: 'SIGKILL', killed: true }, snapshot: { outcome: 'saved' } })
  })
})

describe('a second TERM during the final snapshot', () => {
  test('does not abort it: the snapshot completes and the status is the app’s', async () => {
    const { state } = workDir()
    const MiB = 256
    // --grace 10: the app ends on TERM at once anyway; no warning noise about a slow snapshot.
    const c = shmkeep(state, [L, 'fill', '0x9999', String(MiB), '5'], ['--grace', '10'])
    await c.waitFor(/^filled$/m, 60_000)
    const pid1 = await c.pid1()
    process.kill(pid1, 'SIGTERM')
    await c.waitFor(/app exited with status 5/)
    // Now the snapshot of 256 MiB runs: TERM again, and again, until it is done.
    let sent = 0
    const killer = setInterval(() => {
      try {
        process.kill(pid1, 'SIGTERM')
        sent++
      } catch {
        // gone
      }
    }, 10)
    const safety = setTimeout(() => c.child.kill('SIGKILL'), 60_000)
    const r = await c.exited
    clearInterval(killer)
    clearTimeout(safety)
    expect(sent).toBeGreaterThan(0)
    expect(r.status, r.stderr).toBe(5)
    expect(r.stderr).toMatch(/SIGTERM during the final snapshot: ignored, the snapshot goes on/)
    expect(r.stderr).toMatch(new RegExp(`snapshot gen-000000000001: 1 segment\\(s\\), ${MiB}\\.0 MiB in (\\d+ ms|\\d+\\.\\d s)`))
    const gen = generation(state, currentName(state).trim())
    expect(gen.bytes).toBe(MiB << 20)
    expect(gen.bytesWritten).toBe(MiB << 20)
    expect(fs.statSync(path.join(state, gen.name, gen.segments[0].data)).size).toBe(MiB << 20)
  })
})
