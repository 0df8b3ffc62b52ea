/**
 * Shutdown steps (src/shutdown.ts), from the Node developer's side: a child
 * node process — an HTTP server holding a SysV segment — registers its steps
 * with createShutdown() from the built package, and the test stops it the way
 * an orchestrator does (SIGTERM), then looks at what happened: the order of
 * the steps (a file the steps append to), the client's in-flight request, the
 * exit status, the JSON log, and the generation in the state dir.
 *
 * Each child runs under `unshare --ipc` (exec'd in place: the pid we signal is
 * node's), so its segment dies with it. No test asserts a duration other than
 * "within the grace period", as the child itself measured it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { canUnshare, root, run, tempDir } from './helpers'
import { encodeCheckedJson } from '../src/state/files'

const shmkeepBin = path.join(root, 'bin', 'shmkeep.js')
const distIndex = path.join(root, 'dist', 'index.js')
// dist/index.js may not export it yet: require the module itself.
const distShutdown = path.join(root, 'dist', 'shutdown.js')
const prefix = canUnshare('--ipc') ? ['unshare', '--ipc'] : []
const SEG_SIZE = 64 * 1024

/**
 * The app. `cfg.mode` picks its steps; every step appends a line to
 * steps.log. Prints "ready PORT" when it listens, "in-flight" when /slow
 * starts; /slow answers once the file `release` exists.
 */
const APP = String.raw`
const fs = require('node:fs')
const http = require('node:http')
const path = require('node:path')
const { shm, streamLogger } = require(process.env.DIST_INDEX)
const { createShutdown } = require(process.env.DIST_SHUTDOWN)
const cfg = JSON.parse(process.env.APP_CONFIG)
const record = (line) => fs.appendFileSync(path.join(cfg.work, 'steps.log'), line + '\n')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const id = shm.get(cfg.key, { size: ${SEG_SIZE}, mode: 0o600, create: true })
const seg = shm.attach(id)
for (let i = 4096; i < seg.length; i++) seg[i] = (i * 7) & 0xff
seg.write('state before the stop\0', 0)

const shutdown = createShutdown({
  stateDir: cfg.stateDir,
  grace: cfg.grace,
  keys: [cfg.key],
  log: streamLogger({ format: 'json' }),
  ...(cfg.exit === false ? { exit: false, signals: [] } : {}),
})

if (cfg.mode === 'http') {
  let inFlight = 0
  let served = 0
  let idle
  const server = http.createServer((req, res) => {
    inFlight++
    res.on('close', () => {
      served++
      if (--inFlight === 0 && idle) idle()
    })
    record('request ' + req.url)
    if (req.url !== '/slow') return res.end('ok')
    process.stdout.write('in-flight\n')
    const poll = setInterval(() => {
      if (!fs.existsSync(path.join(cfg.work, 'release'))) return
      clearInterval(poll)
      res.end('slow done')
    }, 20)
  })
  shutdown.step('stop accepting', () => {
    server.close()
    record('stop accepting')
  }, { timeout: 1 })
  shutdown.step('drain', (signal) => new Promise((resolve) => {
    const done = () => {
      server.closeAllConnections()
      resolve()
    }
    if (inFlight === 0) return done()
    idle = done
    signal.addEventListener('abort', done)
  }).then(() => record('drain: served ' + served)), { timeout: 20 })
  shutdown.step('deregister', async () => {
    await sleep(20) // a registry call
    record('deregister')
  }, { timeout: 2 })
  shutdown.step('flush', () => {
    seg.write('served ' + served + '\0', 0)
    record('flush')
  })
  server.listen(0, '127.0.0.1', () => process.stdout.write('ready ' + server.address().port + '\n'))
} else if (cfg.mode === 'hang') {
  const hang = (name) => (signal) => new Promise(() => {
    signal.addEventListener('abort', () => record(name + ' aborted: ' + signal.reason.name))
  })
  shutdown.step('hang', hang('hang'), { timeout: 0.3 })
  shutdown.step('after hang', () => record('after hang'))
  shutdown.step('hang past the budget', hang('hang past the budget'), { timeout: 60 })
  shutdown.step('never reached', () => record('never reached'))
  setInterval(() => {}, 1000) // an app that would never end on its own
  process.stdout.write('ready\n')
} else if (cfg.mode === 'throw') {
  shutdown.step('throws', () => { record('throws'); throw new Error('registry unreachable') })
  shutdown.step('rejects', async () => { record('rejects'); throw new Error('flush refused') })
  shutdown.step('after', () => record('after'))
  setInterval(() => {}, 1000)
  process.stdout.write('ready\n')
} else if (cfg.mode === 'plain') {
  shutdown.step('one', () => record('one'))
  shutdown.step('two', async () => { await sleep(10); record('two') })
  if (cfg.exit === false) {
    shutdown.run('manual').then((report) => {
      process.stdout.write(JSON.stringify(report) + '\n')
      record('still alive after run()')
    })
  } else {
    setInterval(() => {}, 1000)
    process.stdout.write('ready\n')
  }
}
`

interface App {
  child: ChildProcess
  work: string
  state: string
  stdout: string
  stderr: string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  waitFor(pattern: RegExp, what?: 'stdout' | 'stderr', timeoutMs?: number): Promise<RegExpExecArray>
  /** The JSON log lines so far. */
  events(): Array<Record<string, any>>
  steps(): string[]
}

const apps: App[] = []
const cleanups: Array<() => void> = []

afterEach(() => {
  for (const a of apps.splice(0)) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL')
  for (const c of cleanups.splice(0)) c()
})

function startApp(cfg: { mode: string; key: string; grace: number; exit?: boolean; stateDir?: string }, env: NodeJS.ProcessEnv = {}): App {
  const { dir: work, cleanup } = tempDir()
  cleanups.push(cleanup)
  const state = cfg.stateDir ?? path.join(work, 'state')
  const script = path.join(work, 'app.js')
  fs.writeFileSync(script, APP)
  fs.writeFileSync(path.join(work, 'steps.log'), '')
  const baseEnv = { ...process.env }
  delete baseEnv.SHMKEEP_RUN
  delete baseEnv.SHMKEEP_STOP_TIMEOUT
  const argv = [...prefix, process.execPath, script]
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...baseEnv, DIST_INDEX: distIndex, DIST_SHUTDOWN: distShutdown, APP_CONFIG: JSON.stringify({ ...cfg, work, stateDir: state }), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const app: App = {
    child,
    work,
    state,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
    async waitFor(pattern, what = 'stdout', timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs
      for (;;) {
        const m = pattern.exec(app[what])
        if (m) return m
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the app exited before ${pattern}; stderr:\n${app.stderr}`)
        if (Date.now() > until) throw new Error(`timed out waiting for ${pattern}; stderr:\n${app.stderr}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    },
    events() {
      return app.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l))
    },
    steps() {
      return fs.readFileSync(path.join(work, 'steps.log'), 'utf8').split('\n').filter(Boolean)
    },
  }
  child.stdout!.on('data', (d) => (app.stdout += d))
  child.stderr!.on('data', (d) => (app.stderr += d))
  apps.push(app)
  return app
}

async function waitForFile(file: string, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!pattern.test(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '')) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${pattern} in ${file}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

function get(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = ''
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode!, body }))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

function readChecked(file: string): any {
  const text = fs.readFileSync(file, 'utf8')
  expect(text).toMatch(/^shmkeep-json 2 /)
  return JSON.parse(text.slice(text.indexOf('\n') + 1))
}

function generations(state: string): string[] {
  if (!fs.existsSync(state)) return []
  return fs
    .readdirSync(state)
    .filter((n) => /^gen-\d{12}$/.test(n))
    .sort()
}

/** The saved bytes of the one segment with `key` in generation `gen`. */
function savedBytes(state: string, gen: string, key: string): Buffer {
  const record = readChecked(path.join(state, gen, 'GENERATION'))
  const entry = record.segments.find((s: any) => s.key === key)
  expect(entry).toBeDefined()
  return fs.readFileSync(path.join(state, gen, entry.data))
}

function cli(...args: string[]) {
  return run(process.execPath, [shmkeepBin, ...args])
}

const done = (app: App) => app.events().find((e) => e.event === 'shutdown.done')

describe('createShutdown', () => {
  test('an HTTP server: stop accepting, drain the in-flight request, deregister, flush, snapshot, exit 0', async () => {
    const app = startApp({ mode: 'http', key: '0x00005d01', grace: 30 })
    const port = Number((await app.waitFor(/^ready (\d+)$/m))[1])
    expect(await get(port, '/fast')).toEqual({ status: 200, body: 'ok' })

    const slow = get(port, '/slow')
    await app.waitFor(/^in-flight$/m)
    app.child.kill('SIGTERM')
    await waitForFile(path.join(app.work, 'steps.log'), /^stop accepting$/m)
    // No longer accepting: a new connection is refused.
    await expect(get(port, '/late')).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    // A second TERM does not start the shutdown again.
    app.child.kill('SIGTERM')
    await app.waitFor(/SIGTERM during the shutdown: ignored/, 'stderr')
    fs.writeFileSync(path.join(app.work, 'release'), '')

    expect(await slow).toEqual({ status: 200, body: 'slow done' })
    expect(await app.exited).toEqual({ code: 0, signal: null })
    expect(app.steps()).toEqual(['request /fast', 'request /slow', 'stop accepting', 'drain: served 2', 'deregister', 'flush'])

    const d = done(app)!
    expect(d.exitCode).toBe(0)
    expect(d.steps.map((s: any) => [s.name, s.status])).toEqual([
      ['stop accepting', 'ok'],
      ['drain', 'ok'],
      ['deregister', 'ok'],
      ['flush', 'ok'],
    ])
    expect(app.events().filter((e) => e.event === 'shutdown.start')).toHaveLength(1)
    expect(app.events().find((e) => e.event === 'shutdown.deadline')).toMatchObject({ grace: 30, snapshotReserve: 2, steps: 28 })

    // The generation holds the segment as the flush step left it.
    const gens = generations(app.state)
    expect(gens).toHaveLength(1)
    expect(d.snapshot).toBe(gens[0])
    const record = readChecked(path.join(app.state, gens[0]!, 'GENERATION'))
    expect(record).toMatchObject({ reason: 'library', clean: true })
    expect(record.segments.map((s: any) => [s.key, s.size])).toEqual([['0x00005d01', SEG_SIZE]])
    const bytes = savedBytes(app.state, gens[0]!, '0x00005d01')
    expect(bytes.length).toBe(SEG_SIZE)
    expect(bytes.subarray(0, 9).toString('latin1')).toBe('served 2\0')
    for (const i of [4096, 4097, 30_000, SEG_SIZE - 1]) expect(bytes[i]).toBe((i * 7) & 0xff)

    const verify = cli('verify', '--state-dir', app.state, '--json')
    expect(verify.status).toBe(0)
    const listed = cli('generations', '--state-dir', app.state, '--json')
    expect(listed.status).toBe(0)
    expect(JSON.parse(listed.stdout).generations.map((g: any) => [g.name, g.current])).toEqual([[gens[0], true]])
  })

  test('a step that hangs is cut off at its timeout, its AbortSignal fires, the next runs; the snapshot still fits the grace period', async () => {
    // grace 3 s − the 2 s snapshot reserve: the steps share 1 s.
    const app = startApp({ mode: 'hang', key: '0x00005d02', grace: 3 })
    await app.waitFor(/^ready$/m)
    app.child.kill('SIGTERM')
    const exited = await app.exited
    expect(exited).toEqual({ code: 3, signal: null })

    expect(app.steps()).toEqual(['hang aborted: TimeoutError', 'after hang', 'hang past the budget aborted: TimeoutError'])
    const d = done(app)!
    expect(d.steps.map((s: any) => [s.name, s.status])).toEqual([
      ['hang', 'timed-out'],
      ['after hang', 'ok'],
      ['hang past the budget', 'timed-out'],
      ['never reached', 'skipped'],
    ])
    expect(d.ms).toBeLessThan(3000)
    const timeouts = app.events().filter((e) => e.event === 'shutdown.step.timeout')
    expect(timeouts.map((e) => e.step)).toEqual(['hang', 'hang past the budget'])
    expect(timeouts[0].msg).toMatch(/timed out after 0\.3 s: its AbortSignal is aborted; going on with the next/)
    expect(timeouts[1].msg).toMatch(/the steps' budget of 1\.0 s is spent \(the snapshot keeps its 2\.0 s\)/)
    expect(app.events().some((e) => e.event === 'shutdown.lingering')).toBe(true)

    const gens = generations(app.state)
    expect(gens).toHaveLength(1)
    expect(d.snapshot).toBe(gens[0])
    // Steps did not all finish: not a clean stop.
    expect(readChecked(path.join(app.state, gens[0]!, 'GENERATION'))).toMatchObject({ reason: 'library', clean: false })
    expect(savedBytes(app.state, gens[0]!, '0x00005d02').subarray(0, 22).toString('latin1')).toBe('state before the stop\0')
  })

  test('a step that throws (or rejects) is logged and the next one runs', async () => {
    const app = startApp({ mode: 'throw', key: '0x00005d03', grace: 10 })
    await app.waitFor(/^ready$/m)
    app.child.kill('SIGINT')
    expect(await app.exited).toEqual({ code: 3, signal: null })
    expect(app.steps()).toEqual(['throws', 'rejects', 'after'])
    const failed = app.events().filter((e) => e.event === 'shutdown.step.failed')
    expect(failed.map((e) => [e.level, e.step, e.error])).toEqual([
      ['error', 'throws', 'registry unreachable'],
      ['error', 'rejects', 'flush refused'],
    ])
    expect(done(app)!.steps.map((s: any) => s.status)).toEqual(['failed', 'failed', 'ok'])
    expect(app.events().find((e) => e.event === 'shutdown.start')).toMatchObject({ trigger: 'SIGINT' })
    expect(generations(app.state)).toHaveLength(1)
  })

  test('under shmkeep run (SHMKEEP_RUN set) the steps run and the snapshot is left to run', async () => {
    const app = startApp({ mode: 'plain', key: '0x00005d04', grace: 10 }, { SHMKEEP_RUN: '1' })
    await app.waitFor(/^ready$/m)
    app.child.kill('SIGTERM')
    expect(await app.exited).toEqual({ code: 0, signal: null })
    expect(app.steps()).toEqual(['one', 'two'])
    const skipped = app.events().find((e) => e.event === 'shutdown.snapshot.skipped')
    expect(skipped?.msg).toMatch(/runs under `shmkeep run` \(SHMKEEP_RUN=1\), which takes the final snapshot/)
    expect(done(app)).toMatchObject({ exitCode: 0, snapshot: 'skipped' })
    // The steps keep run's arithmetic: they are done before run's stop timeout (grace − reserve).
    expect(app.events().find((e) => e.event === 'shutdown.deadline')).toMatchObject({ grace: 10, snapshotReserve: 2, steps: 8 })
    expect(generations(app.state)).toEqual([])
  })

  test('under shmkeep run the steps end within the stop timeout run computed (SHMKEEP_STOP_TIMEOUT), whatever grace the app was given', async () => {
    const app = startApp({ mode: 'plain', key: '0x00005d06', grace: 30 }, { SHMKEEP_RUN: '1', SHMKEEP_STOP_TIMEOUT: '3.5' })
    await app.waitFor(/^ready$/m)
    app.child.kill('SIGTERM')
    expect(await app.exited).toEqual({ code: 0, signal: null })
    const deadline = app.events().find((e) => e.event === 'shutdown.deadline')
    expect(deadline).toMatchObject({ grace: 30, steps: 3.5 })
    expect(deadline?.msg).toMatch(/steps capped at shmkeep run's stop timeout, 3\.5 s/)
  })

  test('run() without a signal returns the report and does not exit; the reserve is twice the last final snapshot', async () => {
    const first = startApp({ mode: 'plain', key: '0x00005d05', grace: 10, exit: false })
    expect(await first.exited).toEqual({ code: 0, signal: null })
    const report = JSON.parse(first.stdout.trim().split('\n').pop()!)
    expect(first.steps()).toEqual(['one', 'two', 'still alive after run()'])
    expect(report).toMatchObject({
      trigger: 'manual',
      exitCode: 0,
      deadline: { grace: 10, snapshotReserve: 2, steps: 8 },
      steps: [
        { name: 'one', status: 'ok' },
        { name: 'two', status: 'ok' },
      ],
      snapshot: { status: 'saved', report: { current: true } },
    })
    expect(report.deadline.lastSnapshotSeconds).toBeUndefined()

    // Pretend that final snapshot took 1.5 s: the next reserve is 3 s.
    const gen = report.snapshot.report.generation
    const file = path.join(first.state, gen, 'GENERATION')
    const record = readChecked(file)
    fs.writeFileSync(file, encodeCheckedJson(1, { ...record, durationMs: { total: 1500, copy: 1000 } }))
    const second = startApp({ mode: 'plain', key: '0x00005d05', grace: 10, exit: false, stateDir: first.state })
    expect(await second.exited).toEqual({ code: 0, signal: null })
    const again = JSON.parse(second.stdout.trim().split('\n').pop()!)
    expect(again.deadline).toMatchObject({ grace: 10, snapshotReserve: 3, steps: 7, lastSnapshotSeconds: 1.5 })
    expect(again.deadline.explain).toBe('deadline 10 s from manual: steps 7.0 s, then the snapshot\'s reserve 3.0 s (max of 2 s and twice the last final snapshot, 1.50 s)')
  })
})
