/**
 * The deployment recipes of examples/ (docs/RECIPES.md), each exercised the
 * way an operator runs it. The app is examples/legacy-app/counter.c, built
 * here with its own Makefile. The seeds' scenario throughout: a writer fills
 * key 0x162e with 'a'..'z', the container is stopped as `docker stop` does
 * (TERM to PID 1, the grace period, KILL), and a new container — a new IPC
 * namespace — runs the reader, which must print `a b c … z`.
 *
 * Without an engine: "containers" from `unshare --ipc --pid --fork
 * --mount-proc --kill-child` (test/e2e/container.ts) for the shell entrypoint,
 * supervisord and --signal-group; the Dockerfile, compose and Kubernetes files
 * are checked offline (exec-form JSON, VOLUME, YAML that parses, the grace
 * arithmetic adds up). In a real OCI runtime: Debian's runc (test/e2e/runc.ts)
 * runs the exact command lines of the Dockerfile, of compose's `init: true`
 * and of the StatefulSet, with Docker's default capabilities.
 *
 * Every container has an IPC namespace of its own: the keys here never meet
 * another test file's. Everything goes into one temp dir (prefix
 * shmkeep-recipes-), removed in afterAll with every runc container.
 */
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { have, root } from '../helpers'
import { Container, shmkeepBin, type Exited } from './container'
import { PipedContainer } from './piped-container'
import { composeDuration, dockerfileInstructions, dockerImage, loadYamlAll, readIni, yamlLoader } from './recipe-files'
import { aptInstall, capMask, DOCKER_CAPS, Runc, SHMKEEP_IN_IMAGE, STATE_IN_IMAGE } from './runc'

const ABC = 'a b c d e f g h i j k l m n o p q r s t u v w x y z'
const examples = path.join(root, 'examples')
const ex = (...p: string[]) => path.join(examples, ...p)
/** `docker stop -t` and SHMKEEP_GRACE of the fast tests: the app gets 3 − 2 = 1 s. */
const GRACE = 3
/** examples/docker/Dockerfile's ENTRYPOINT, as the brief of every recipe has it. */
const ENTRYPOINT = ['shmkeep', 'run', '--state-dir', '/var/lib/shmkeep', '--', '/app/server']

let tmp: string
/** The example app built with its Makefile (dynamic), and static when libc.a is there. */
let counter: string
let counterStatic: string | undefined
let buildLog = ''
/** A PATH with `shmkeep` (this checkout's bin/shmkeep.js) and `counter` first. */
let binPath: string
const containers: Container[] = []
const piped: PipedContainer[] = []

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-recipes-'))
  const make = (dir: string, target: string) => {
    fs.mkdirSync(dir, { recursive: true })
    for (const f of ['counter.c', 'Makefile']) fs.copyFileSync(ex('legacy-app', f), path.join(dir, f))
    const r = spawnSync('make', ['-C', dir, target, 'CFLAGS=-O2 -Wall -Wextra -Werror'], { encoding: 'utf8' })
    buildLog += `$ make ${target}\n${r.stdout}${r.stderr}`
    return r.status === 0 ? path.join(dir, 'counter') : undefined
  }
  const built = make(path.join(tmp, 'build'), 'counter')
  if (!built) throw new Error(`examples/legacy-app does not build:\n${buildLog}`)
  counter = built
  counterStatic = make(path.join(tmp, 'build-static'), 'static')
  const bin = path.join(tmp, 'bin')
  fs.mkdirSync(bin)
  fs.writeFileSync(path.join(bin, 'shmkeep'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(shmkeepBin)} "$@"\n`, { mode: 0o755 })
  fs.copyFileSync(counter, path.join(bin, 'counter'))
  fs.chmodSync(path.join(bin, 'counter'), 0o755)
  binPath = `${bin}:${process.env.PATH}`
}, 120_000)

afterAll(() => {
  for (const c of containers) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
  for (const c of piped) c.kill()
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

let scratchN = 0
/** A fresh folder under the temp dir. */
function scratch(name: string): string {
  const d = path.join(tmp, `${name}-${++scratchN}`)
  // With its state dir, as a volume would be: shmkeep restore/run never create it.
  fs.mkdirSync(path.join(d, 'state'), { recursive: true, mode: 0o700 })
  return d
}

/** argv as PID 1 of a new unshare container, with the test PATH. */
function start(argv: string[], env: NodeJS.ProcessEnv = {}): Container {
  const c = Container.start(argv, { PATH: binPath, ...env })
  containers.push(c)
  return c
}

/** Run `sh -c script` under `prefix` (async: the event loop keeps going). */
function shAsync(prefix: string[], script: string, env: NodeJS.ProcessEnv = {}): Promise<Exited> {
  return new Promise((resolve) => {
    const child = spawn(prefix[0]!, [...prefix.slice(1), 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: binPath, ...env } })
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

const shq = (...words: string[]) => words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ')

/** A checked-JSON state file: header line, then JSON. */
function readChecked(file: string): any {
  const text = fs.readFileSync(file, 'utf8')
  expect(text).toMatch(/^shmkeep-json 2 /)
  return JSON.parse(text.slice(text.indexOf('\n') + 1))
}

function currentGeneration(state: string): any {
  const name = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
  return readChecked(path.join(state, name, 'GENERATION'))
}

function generations(state: string): string[] {
  return fs.existsSync(state) ? fs.readdirSync(state).filter((n) => /^gen-\d{12}$/.test(n)) : []
}

/** The count a `counter serve` printed when it stopped. */
function stoppedAt(stdout: string): number {
  const m = /serve: stopped at count=(\d+) by SIG/.exec(stdout)
  if (!m) throw new Error(`no "serve: stopped at count=" in:\n${stdout}`)
  return Number(m[1])
}

/** Parse `counter get`. */
function counts(stdout: string): { count: number; starts: number; workers: number[] } {
  const m = /count=(\d+) starts=(\d+) workers=([\d,]+)/.exec(stdout)
  if (!m) throw new Error(`no "count=… starts=… workers=…" in:\n${stdout}`)
  return { count: Number(m[1]), starts: Number(m[2]), workers: m[3]!.split(',').map(Number) }
}

// =================================================================== the app

describe('examples/legacy-app', () => {
  test('builds with its Makefile, with -Wall -Wextra -Werror; `make static` too where libc.a is installed', () => {
    expect(fs.statSync(counter).mode & 0o111).not.toBe(0)
    if (!counterStatic) console.warn(`recipes.test.ts: no static build of the example app (the runc rootfs gets its shared libraries instead):\n${buildLog}`)
  })

  test('keeps a..z and a counter in key 0x162e; a new IPC namespace finds nothing (the problem shmkeep solves)', async () => {
    const same = await shAsync(['unshare', '--ipc'], `counter write-abc read-abc && (counter serve & sleep 0.35; kill -TERM $!; wait $!) && counter get`)
    expect(same.status, same.stderr).toBe(0)
    const lines = same.stdout.trim().split('\n')
    expect(lines[0]).toBe(ABC)
    expect(counts(same.stdout).count).toBe(stoppedAt(same.stdout))
    expect(counts(same.stdout).starts).toBe(1)
    const fresh = await shAsync(['unshare', '--ipc'], 'counter read-abc')
    expect(fresh.status).toBe(1)
    expect(fresh.stdout.trim()).toBe('no segment at key 0x162e')
  })
})

// ========================================================= shell entrypoint

describe('examples/shell-entrypoint/entrypoint.sh in an unshare container', () => {
  const entrypoint = ex('shell-entrypoint', 'entrypoint.sh')

  test('is executable (ENTRYPOINT ["/entrypoint.sh"] needs that) and parses with sh -n', () => {
    expect(() => fs.accessSync(entrypoint, fs.constants.X_OK)).not.toThrow()
    expect(fs.readFileSync(entrypoint, 'utf8')).toMatch(/^#!\/bin\/sh\n/)
    const r = spawnSync('sh', ['-n', entrypoint], { encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(0)
  })

  test('the seeds’ scenario: writer, docker stop -t 3 (TERM to the script as PID 1), new container, reader prints a b c … z', async () => {
    const state = path.join(scratch('sh'), 'state')
    const env = { SHMKEEP_STATE_DIR: state }
    const c = start([entrypoint, 'counter', 'write-abc', 'serve'], env)
    await c.waitFor(/serve: start 1, count=0/)
    const stopped = await c.stop(GRACE)
    // 0, not 137: the script passed TERM on, the app stopped, the snapshot ran, all before the KILL.
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(/nothing to restore \(empty state dir\): a first start/)
    expect(stopped.stderr).toMatch(/entrypoint: app exited with status 0/)
    expect(stopped.stderr).toMatch(/snapshot gen-000000000001: 1 segment\(s\).*now CURRENT/)
    const count = stoppedAt(stopped.stdout)
    expect(count).toBeGreaterThan(0)

    const next = await start([entrypoint, 'counter', 'read-abc', 'get'], env).exited
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.split('\n')[0]).toBe(ABC)
    // The app's last write before it stopped is there: the snapshot came after it.
    expect(counts(next.stdout)).toMatchObject({ count, starts: 1 })
    expect(next.stderr).toMatch(/restored 1 segment\(s\) from gen-000000000001/)
  })

  test('the app’s exit status is the container’s, and the snapshot is still taken', async () => {
    const state = path.join(scratch('sh'), 'state')
    const r = await start([entrypoint, 'counter', 'write-abc', 'no-such-command'], { SHMKEEP_STATE_DIR: state }).exited
    expect(r.status, r.stderr).toBe(2) // counter's usage error
    expect(r.stderr).toMatch(/entrypoint: app exited with status 2/)
    expect(generations(state)).toHaveLength(1)
  })

  test('a failed restore (a damaged snapshot) exits 125 and does not start the app', async () => {
    const work = scratch('sh')
    const state = path.join(work, 'state')
    const first = await start([entrypoint, 'counter', 'write-abc'], { SHMKEEP_STATE_DIR: state }).exited
    expect(first.status, first.stderr).toBe(0)
    const gen = path.join(state, generations(state)[0]!)
    const data = path.join(gen, fs.readdirSync(gen).find((f) => f.endsWith('.data'))!)
    const bytes = fs.readFileSync(data)
    bytes[3]! ^= 0xff
    fs.writeFileSync(data, bytes)
    const marker = path.join(work, 'started')
    const r = await start([entrypoint, 'touch', marker], { SHMKEEP_STATE_DIR: state }).exited
    expect(r.status, r.stderr).toBe(125)
    expect(r.stderr).toMatch(/entrypoint: shmkeep restore failed: the app is not started/)
    expect(fs.existsSync(marker)).toBe(false)
  })

  test('a restart inside the same IPC namespace (a Kubernetes container restart in its pod) keeps the live segment', async () => {
    const state = path.join(scratch('sh'), 'state')
    const container = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child']
    const script = [
      `${shq(...container, entrypoint, 'counter', 'write-abc')}; echo "run1=$?"`,
      // Between the two runs the pod's namespace keeps the segment, and it changes.
      `(counter serve & sleep 0.35; kill -TERM $!; wait $!) || exit 99`,
      `echo '--- second run' >&2`,
      `${shq(...container, entrypoint, 'counter', 'read-abc', 'get')}; echo "run2=$?"`,
    ].join('\n')
    const r = await shAsync(['unshare', '--ipc'], script, { SHMKEEP_STATE_DIR: state })
    expect(r.stdout, r.stderr).toContain('run1=0')
    expect(r.stdout, r.stderr).toContain('run2=0')
    const second = r.stderr.split('--- second run\n')[1]
    // The namespace is warm (its lineage record is here): nothing is restored over the live segment, newer than the snapshot.
    expect(second, r.stderr).toMatch(/nothing restored: this IPC namespace already holds the state of gen-0+1 .*the live state is kept/)
    expect(r.stdout).toContain(ABC)
    expect(counts(r.stdout)).toMatchObject({ count: stoppedAt(r.stdout), starts: 1 })
  })
})

// ============================================================== supervisord

describe('supervisord and --signal-group (examples/supervisord) in an unshare container', () => {
  let supervisord: string | undefined
  let why = ''
  beforeAll(() => {
    const find = () => spawnSync('sh', ['-c', 'command -v supervisord'], { encoding: 'utf8' }).stdout.trim() || undefined
    supervisord = find()
    if (!supervisord) {
      why = aptInstall('supervisor')
      supervisord = find()
    }
    if (!supervisord) console.warn(`recipes.test.ts: supervisord is not installed and \`apt-get install -y supervisor\` did not work (${why}): the supervisord test is skipped`)
  }, 300_000)

  /** The image's ENTRYPOINT with its paths mapped to this test's. */
  const mapPaths = (argv: string[], map: Record<string, string>) => argv.map((a) => map[a] ?? a)

  /** One run of the supervisord image (shared by the two tests below): writer, docker stop, reader. */
  let svRun: Promise<{ stopped: Exited & { killed: boolean }; log: string; gen: any; next: Exited }> | undefined
  function supervisordScenario() {
    svRun ??= (async () => {
      const work = scratch('sv')
      const state = path.join(work, 'state')
      const image = dockerImage(ex('supervisord', 'Dockerfile'))
      // The config as shipped; only the app's path differs here, and the writer writes a..z first.
      const conf = path.join(work, 'supervisord.conf')
      const text = fs.readFileSync(ex('supervisord', 'supervisord.conf'), 'utf8')
      expect(text).toContain('command=/app/server serve\n')
      fs.writeFileSync(conf, text.replace('command=/app/server serve\n', `command=${counter} write-abc serve\n`).replaceAll('/app/server', counter))
      const entry = mapPaths(image.entrypoint!, { [STATE_IN_IMAGE]: state, '/etc/supervisor/supervisord.conf': conf })
      const grace = Number(image.env.SHMKEEP_GRACE)
      // stdout a real pipe, as Docker gives it: the programs log to /dev/stdout.
      const c = new PipedContainer(entry, { PATH: binPath, ...image.env }, path.join(work, 'status'))
      piped.push(c)
      await c.waitFor(/success: counter entered RUNNING state/)
      await c.waitFor(/success: workers entered RUNNING state/)
      await c.waitFor(/serve: 3 workers running/)
      const stopped = await c.stop(grace)
      const gen = fs.existsSync(path.join(state, 'CURRENT')) ? currentGeneration(state) : undefined
      const next = await start(mapPaths(['shmkeep', 'run', '--state-dir', STATE_IN_IMAGE, '--', 'sh', '-c', 'counter read-abc get && counter --key 0x162f get'], { [STATE_IN_IMAGE]: state }), { SHMKEEP_GRACE: String(GRACE) }).exited
      return { stopped, log: stopped.stdout + stopped.stderr, gen, next }
    })()
    return svRun
  }

  test('shmkeep run -- supervisord -n (examples/supervisord/Dockerfile): docker stop -t 30 stops every program, then shmkeep snapshots; the next container reads them back', async (ctx) => {
    if (!supervisord) ctx.skip(`supervisord is not installed and could not be (apt-get install -y supervisor: ${why})`)
    const { stopped, log, gen, next } = await supervisordScenario()
    expect(stopped.killed, log).toBe(false)
    expect(stopped.status, log).toBe(0)
    expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app \(pid \d+\)/)
    expect(log).toMatch(/received SIGTERM indicating exit request/)
    expect(log.match(/worker \d: stopped at \d+ by SIG/g)).toHaveLength(3)
    const count = stoppedAt(stopped.stdout)
    expect(gen).toMatchObject({ reason: 'stop', clean: true })
    expect(gen.segments.map((s: any) => s.key).sort()).toEqual(['0x0000162e', '0x0000162f'])

    expect(next.status, next.stderr).toBe(0)
    const [abc, main, workers] = next.stdout.trim().split('\n')
    expect(abc).toBe(ABC)
    expect(counts(main!)).toMatchObject({ count, starts: 1 })
    expect(counts(workers!).workers.slice(0, 3).every((n) => n > 0), workers).toBe(true)
  })

  // As PID 1, shmkeep signals only the app at first; what is left once it
  // exited gets TERM then. supervisord stops its programs its own way.
  test('supervisord stops its programs itself: each gets its own stopsignal (INT for counter), workers (priority 20) before counter', async (ctx) => {
    if (!supervisord) ctx.skip(`supervisord is not installed and could not be (apt-get install -y supervisor: ${why})`)
    const { stopped, log } = await supervisordScenario()
    expect(stopped.status, log).toBe(0)
    expect(log).toMatch(/stopped: workers \(exit status 0\)/)
    expect(log).toMatch(/stopped: counter \(exit status 0\)/)
    expect(log.indexOf('stopped: workers')).toBeLessThan(log.indexOf('stopped: counter'))
    expect(stopped.stdout).toMatch(/serve: stopped at count=\d+ by SIGINT/)
  })

  const workersImage = () => dockerImage(ex('supervisord', 'Dockerfile.workers'))

  for (const under of ['PID 1', 'tini'] as const) {
    test(`--signal-group (Dockerfile.workers), shmkeep as ${under}: TERM reaches every worker of a parent that does not pass it on; a clean generation`, async (ctx) => {
      if (under === 'tini' && !have('tini')) ctx.skip('tini is not installed (apt-get install tini)')
      const state = path.join(scratch('wk'), 'state')
      const image = workersImage()
      expect(image.entrypoint).toContain('--signal-group')
      const entry = [...(under === 'tini' ? ['tini', '--'] : []), ...mapPaths(image.entrypoint!, { [STATE_IN_IMAGE]: state, '/app/server': counter })]
      const env = { ...image.env, SHMKEEP_GRACE: String(GRACE) }
      const c = start([...entry, 'write-abc', 'serve'], env)
      await c.waitFor(/serve: 3 workers running/)
      const stopped = await c.stop(GRACE)
      expect(stopped.status, stopped.stderr).toBe(0)
      expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app's process group/)
      expect(stopped.stdout.match(/worker \d: stopped at \d+ by SIGTERM/g)).toHaveLength(3)
      expect(stopped.stdout).toMatch(/serve: all workers stopped/)
      expect(currentGeneration(state)).toMatchObject({ reason: 'stop', clean: true })

      const next = await start([...entry, 'read-abc', 'get'], env).exited
      expect(next.status, next.stderr).toBe(0)
      expect(next.stdout.split('\n')[0]).toBe(ABC)
      expect(counts(next.stdout).workers.slice(0, 3).every((n) => n > 0), next.stdout).toBe(true)
    })
  }

  test('(control) under tini without --signal-group: the workers never get TERM, the parent is SIGKILLed at the stop timeout, the snapshot is marked live', async (ctx) => {
    if (!have('tini')) ctx.skip('tini is not installed (apt-get install tini)')
    const state = path.join(scratch('wk'), 'state')
    const entry = mapPaths(workersImage().entrypoint!.filter((a) => a !== '--signal-group'), { [STATE_IN_IMAGE]: state, '/app/server': counter })
    const c = start(['tini', '--', ...entry, 'write-abc', 'serve'], { SHMKEEP_GRACE: String(GRACE) })
    await c.waitFor(/serve: 3 workers running/)
    const stopped = await c.stop(GRACE + 5)
    expect(stopped.status, stopped.stderr).toBe(137)
    expect(stopped.stdout).not.toMatch(/worker \d: stopped/)
    expect(stopped.stderr).toMatch(/SIGKILL/)
    expect(stopped.stderr).toMatch(/segment 0x0000162e is still attached by pid \d+ .*the generation is marked live \(may be torn\)/)
    expect(currentGeneration(state)).toMatchObject({ clean: false, consistency: 'live', attachers: expect.anything() })
  })
})

// ============================================================ recipe files

describe('recipe files, checked offline', () => {

  test('examples/docker/Dockerfile: exec-form ENTRYPOINT, VOLUME of the state dir, SHMKEEP_GRACE; every image installs npm pack’s tarball offline', () => {
    const image = dockerImage(ex('docker', 'Dockerfile'))
    expect(image.shellForm).toEqual([])
    expect(image.entrypoint).toEqual(ENTRYPOINT)
    expect(image.cmd).toEqual(['serve'])
    expect(image.volumes).toContain(STATE_IN_IMAGE)
    expect(Number(image.env.SHMKEEP_GRACE)).toBeGreaterThan(2)
    const from = image.instructions.find((x) => x.op === 'FROM')!
    expect(from.rest).toMatch(/^node:\d+/)
    // Every image installs shmkeep from `npm pack`'s tarball, with no registry; every other
    // COPY source from the build context exists in this repository and passes .dockerignore.
    const ignore = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8')
    expect(ignore).toMatch(/^\*$/m)
    for (const f of ['docker/Dockerfile', 'shell-entrypoint/Dockerfile', 'supervisord/Dockerfile', 'supervisord/Dockerfile.workers']) {
      const final = dockerImage(ex(f)).instructions
      expect(final.map((x) => `${x.op} ${x.rest}`), f).toContain('COPY shmkeep-*.tgz /tmp/')
      expect(final.map((x) => `${x.op} ${x.rest}`), f).toContain('RUN npm install -g --offline /tmp/shmkeep-*.tgz && rm /tmp/shmkeep-*.tgz && npm cache clean --force')
      expect(final.filter((x) => /shmkeep@|npx/.test(x.rest)), f).toEqual([])
      for (const x of dockerfileInstructions(ex(f)).filter((i) => i.op === 'COPY' && !i.rest.startsWith('--from'))) {
        const words = x.rest.split(/\s+/)
        for (const src of words.slice(0, -1)) {
          if (src === 'shmkeep-*.tgz') continue // made by npm pack before the build
          expect(fs.existsSync(path.join(root, src)), `${f}:${x.line} COPY ${src}`).toBe(true)
          expect(ignore, `${f}:${x.line} COPY ${src} must pass .dockerignore`).toMatch(new RegExp(`^!${src.split('/')[0]}/`, 'm'))
        }
      }
    }
  })

  test('examples/supervisord: Dockerfiles in exec form; supervisord in the foreground; the stopwaitsecs fit in shmkeep’s stop timeout', () => {
    const image = dockerImage(ex('supervisord', 'Dockerfile'))
    expect(image.shellForm).toEqual([])
    expect(image.entrypoint).toEqual(['shmkeep', 'run', '--state-dir', STATE_IN_IMAGE, '--', 'supervisord', '-n', '-c', '/etc/supervisor/supervisord.conf'])
    expect(image.volumes).toContain(STATE_IN_IMAGE)
    expect(image.instructions.some((x) => x.op === 'COPY' && x.rest === 'examples/supervisord/supervisord.conf /etc/supervisor/supervisord.conf')).toBe(true)
    const ini = readIni(ex('supervisord', 'supervisord.conf'))
    expect(ini.supervisord!.nodaemon).toBe('true')
    const programs = Object.entries(ini).filter(([name]) => name.startsWith('program:'))
    expect(programs.map(([n]) => n)).toEqual(['program:counter', 'program:workers'])
    // supervisord stops the groups one after the other: the sum must fit, with 2 s to spare.
    const stopTimeout = Number(image.env.SHMKEEP_GRACE) - 2
    const waits = programs.reduce((sum, [, p]) => sum + Number(p.stopwaitsecs ?? 10), 0)
    expect(waits + 2).toBeLessThan(stopTimeout)
    expect(ini['program:workers']).toMatchObject({ stopasgroup: 'true', killasgroup: 'true' })

    const workers = dockerImage(ex('supervisord', 'Dockerfile.workers'))
    expect(workers.shellForm).toEqual([])
    expect(workers.entrypoint).toEqual(['shmkeep', 'run', '--signal-group', '--state-dir', STATE_IN_IMAGE, '--', '/app/server', '--workers', '3'])
    expect(workers.volumes).toContain(STATE_IN_IMAGE)
  })

  test('examples/compose/docker-compose.yml parses; init: true; stop_grace_period = SHMKEEP_GRACE; a named volume at the state dir', (ctx) => {
    const { problem } = yamlLoader()
    if (problem) ctx.skip(problem)
    const [doc] = loadYamlAll(ex('compose', 'docker-compose.yml'))
    const svc = doc.services.counter
    expect(svc.init).toBe(true)
    expect(svc.build).toMatchObject({ context: '../..', dockerfile: 'examples/docker/Dockerfile' })
    expect(fs.existsSync(path.join(ex('compose'), svc.build.context, svc.build.dockerfile))).toBe(true)
    expect(svc.entrypoint).toBeUndefined() // the image's exec-form ENTRYPOINT stays
    expect(svc.command).toBeUndefined()
    expect(composeDuration(svc.stop_grace_period)).toBe(Number(svc.environment.SHMKEEP_GRACE))
    const [volume, target] = (svc.volumes as string[])[0]!.split(':')
    expect(target).toBe(STATE_IN_IMAGE)
    expect(doc.volumes).toHaveProperty(volume!)
  })

  test('examples/kubernetes/statefulset.yaml parses; one replica; SHMKEEP_GRACE = terminationGracePeriodSeconds − the preStop hook; the PVC at the state dir', (ctx) => {
    const { problem } = yamlLoader()
    if (problem) ctx.skip(problem)
    const docs = loadYamlAll(ex('kubernetes', 'statefulset.yaml'))
    const svc = docs.find((d) => d.kind === 'Service')
    const sts = docs.find((d) => d.kind === 'StatefulSet')
    expect(sts).toMatchObject({ apiVersion: 'apps/v1', spec: { replicas: 1, serviceName: svc.metadata.name } })
    expect(svc.spec.clusterIP).toBe('None')
    expect(sts.spec.selector.matchLabels).toEqual(sts.spec.template.metadata.labels)
    const pod = sts.spec.template.spec
    const [container] = pod.containers
    expect(container.command).toEqual(ENTRYPOINT)
    const env = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]))
    const sleep = container.lifecycle.preStop.exec.command
    expect(sleep[0]).toBe('sleep')
    const grace = Number(env.SHMKEEP_GRACE)
    expect(grace).toBe(pod.terminationGracePeriodSeconds - Number(sleep[1]))
    expect(grace - 2).toBeGreaterThan(0)
    const claim = sts.spec.volumeClaimTemplates[0]
    expect(container.volumeMounts).toContainEqual({ name: claim.metadata.name, mountPath: STATE_IN_IMAGE })
    expect(claim.spec.accessModes).toEqual(['ReadWriteOnce'])
    expect(pod.hostIPC).toBeUndefined()
  })

  test('docs/RECIPES.md names every recipe and the grace arithmetic', () => {
    const md = fs.readFileSync(path.join(root, 'docs', 'RECIPES.md'), 'utf8')
    for (const f of ['examples/docker/Dockerfile', 'examples/docker/run-init.md', 'examples/shell-entrypoint/entrypoint.sh', 'examples/compose/docker-compose.yml', 'examples/kubernetes/statefulset.yaml', 'examples/supervisord/']) {
      expect(md, f).toContain(f)
      expect(fs.existsSync(path.join(root, f)), f).toBe(true)
    }
    expect(md).toMatch(/grace − max\(2 s, 2 × last snapshot\)/)
  })
})

// ======================================================================= runc

describe('in a real OCI runtime: runc, Docker’s default capabilities', () => {
  let runc: Runc | undefined
  let problem = ''
  beforeAll(() => {
    const r = Runc.setUp(path.join(tmp, 'runc'), { app: counterStatic ?? counter })
    runc = r.runc
    problem = r.problem ?? ''
    if (problem) console.warn(`recipes.test.ts: the runc tests are skipped: ${problem}`)
  }, 300_000)
  afterAll(() => runc?.cleanup())

  const dockerfile = () => dockerImage(ex('docker', 'Dockerfile'))

  /** Host view of a container process: its command line and effective capabilities. */
  function proc(pid: number) {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    return {
      cmdline: fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean),
      capEff: BigInt('0x' + /^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]),
      children: fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number),
    }
  }

  test('(a) examples/docker/Dockerfile: shmkeep as PID 1; docker stop -t 3; a new container reads a b c … z', async (ctx) => {
    if (problem || !runc) return ctx.skip(problem)
    const image = dockerfile()
    const state = path.join(scratch('runc'), 'state')
    // docker run -e SHMKEEP_GRACE=3 -v state:/var/lib/shmkeep IMAGE write-abc serve
    const env = { ...image.env, SHMKEEP_GRACE: String(GRACE) }
    const c = runc.start({ args: [...image.entrypoint!, 'write-abc', 'serve'], env, stateDir: state })
    await c.waitFor(/serve: start 1, count=0/)
    const hostPid = c.hostPid()
    const pid1 = proc(hostPid)
    expect(pid1.cmdline.slice(0, 3)).toEqual(['node', '/usr/local/bin/shmkeep', 'run'])
    expect(pid1.capEff).toBe(capMask(DOCKER_CAPS))
    // Docker's view of the machine: its own IPC namespace, /proc/sys read-only.
    expect(fs.readlinkSync(`/proc/${hostPid}/ns/ipc`)).not.toBe(fs.readlinkSync('/proc/self/ns/ipc'))
    const procSys = fs.readFileSync(`/proc/${hostPid}/mountinfo`, 'utf8').split('\n').find((l) => l.split(' ')[4] === '/proc/sys')
    expect(procSys?.split(' ')[5]).toMatch(/^ro(,|$)/)
    const stopped = await c.stop(GRACE)
    expect(stopped.killed, stopped.stderr).toBe(false)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).toMatch(/stop timeout 1\.0 s = grace 3 s/)
    expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app/)
    expect(stopped.stderr).toMatch(/snapshot gen-000000000001: 1 segment\(s\)/)
    const count = stoppedAt(stopped.stdout)
    expect(currentGeneration(state)).toMatchObject({ reason: 'stop', clean: true })

    const next = await runc.run({ args: [...image.entrypoint!, 'read-abc', 'get'], env, stateDir: state })
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.split('\n')[0]).toBe(ABC)
    expect(counts(next.stdout)).toMatchObject({ count, starts: 1 })
    expect(next.stderr).toMatch(/restored 1 segment\(s\) from gen-000000000001/)
  })

  test('(b) examples/compose (init: true = docker run --init): tini as PID 1, shmkeep its child; stop; read back', async (ctx) => {
    if (problem || !runc) return ctx.skip(problem)
    if (!fs.existsSync(path.join(runc.rootfs, 'sbin/docker-init'))) return ctx.skip('tini is not installed (apt-get install tini): no /sbin/docker-init for the rootfs')
    const { problem: noYaml } = yamlLoader()
    if (noYaml) return ctx.skip(noYaml)
    const image = dockerfile()
    const svc = loadYamlAll(ex('compose', 'docker-compose.yml'))[0].services.counter
    expect(svc.init).toBe(true)
    const state = path.join(scratch('runc'), 'state')
    // What compose runs: docker-init -- ENTRYPOINT CMD, with the service's environment (grace shortened, as -e would).
    const env = { ...image.env, ...svc.environment, SHMKEEP_GRACE: String(GRACE) }
    const args = (cmd: string[]) => ['/sbin/docker-init', '--', ...image.entrypoint!, ...cmd]
    const c = runc.start({ args: args(['write-abc', 'serve']), env, stateDir: state })
    await c.waitFor(/serve: start 1, count=0/)
    const pid1 = proc(c.hostPid())
    expect(pid1.cmdline[0]).toBe('/sbin/docker-init')
    expect(pid1.capEff).toBe(capMask(DOCKER_CAPS))
    expect(pid1.children).toHaveLength(1)
    expect(proc(pid1.children[0]!).cmdline.slice(0, 3)).toEqual(['node', '/usr/local/bin/shmkeep', 'run'])
    const stopped = await c.stop(GRACE)
    expect(stopped.killed, stopped.stderr).toBe(false)
    expect(stopped.status, stopped.stderr).toBe(0)
    expect(stopped.stderr).not.toMatch(/cannot become a child subreaper/)
    expect(stopped.stderr).not.toMatch(/runs under a shell/)
    expect(stopped.stderr).toMatch(/forwarded SIGTERM to the app/)
    const count = stoppedAt(stopped.stdout)

    const next = await runc.run({ args: args(['read-abc', 'get']), env, stateDir: state })
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.split('\n')[0]).toBe(ABC)
    expect(counts(next.stdout)).toMatchObject({ count, starts: 1 })
  })

  test('(c) examples/kubernetes: the app drops to uid 1000 and keeps its segment at 0600; shmkeep (root, no CAP_IPC_OWNER) saves and restores it as the owner', async (ctx) => {
    if (problem || !runc) return ctx.skip(problem)
    const { problem: noYaml } = yamlLoader()
    if (noYaml) return ctx.skip(noYaml)
    const sts = loadYamlAll(ex('kubernetes', 'statefulset.yaml')).find((d) => d.kind === 'StatefulSet')
    const container = sts.spec.template.spec.containers[0]
    const env = { ...Object.fromEntries(container.env.map((e: any) => [e.name, String(e.value)])), SHMKEEP_GRACE: String(GRACE) }
    const drop = (container.securityContext?.capabilities?.drop ?? []).map((c: string) => `CAP_${c}`)
    const caps = DOCKER_CAPS.filter((c) => !drop.includes(c))
    expect(caps).not.toContain('CAP_IPC_OWNER')
    const noNewPrivileges = container.securityContext?.allowPrivilegeEscalation === false
    // The manifest's args, with its final command (serve) replaced by the scenario's.
    const appArgs: string[] = container.args
    expect(appArgs.at(-1)).toBe('serve')
    const args = (...cmd: string[]) => [...container.command, ...appArgs.slice(0, -1), ...cmd]
    expect(args()).toEqual([...ENTRYPOINT, '--uid', '1000', '--mode', '0600'])
    const state = path.join(scratch('runc'), 'state')

    const c = runc.start({ args: args('write-abc', 'serve'), env, stateDir: state, caps, noNewPrivileges })
    await c.waitFor(/serve: start 1, count=0/)
    expect(proc(c.hostPid()).capEff).toBe(capMask(caps))
    const stopped = await c.stop(GRACE)
    expect(stopped.killed, stopped.stderr).toBe(false)
    expect(stopped.status, stopped.stderr).toBe(0)
    const count = stoppedAt(stopped.stdout)
    const gen = currentGeneration(state)
    expect(gen).toMatchObject({ reason: 'stop', clean: true })
    expect(gen.segments).toHaveLength(1)
    // A small segment's record is inside GENERATION (packed), a larger one's in its .meta.
    const entry = gen.segments[0]
    const meta = entry.packed ?? readChecked(path.join(state, gen.name, entry.meta))
    expect(meta).toMatchObject({ key: '0x0000162e', mode: 0o600, uid: 1000, gid: 1000, cuid: 1000, cgid: 1000 })

    const next = await runc.run({ args: args('read-abc', 'get'), env, stateDir: state, caps, noNewPrivileges })
    expect(next.status, next.stderr).toBe(0)
    expect(next.stdout.split('\n')[0]).toBe(ABC)
    expect(counts(next.stdout)).toMatchObject({ count, starts: 1 })

    // (control) the same segment is closed to root without CAP_IPC_OWNER: the
    // restore really had to act as its owner, and restored the 0600 mode.
    const asRoot = await runc.run({ args: [...container.command, 'read-abc'], env, stateDir: state, caps, noNewPrivileges })
    expect(asRoot.status, asRoot.stderr).toBe(1)
    expect(asRoot.stderr).toMatch(/counter: shmat \(key 0x162e\): Permission denied/)
  })

  test('(control) the shell form, /bin/sh -c "shmkeep run …" as PID 1: TERM never arrives, docker stop ends in SIGKILL, nothing is saved', async (ctx) => {
    if (problem || !runc) return ctx.skip(problem)
    const image = dockerfile()
    const state = path.join(scratch('runc'), 'state')
    const env = { ...image.env, SHMKEEP_GRACE: String(GRACE) }
    // CMD shmkeep run --state-dir /var/lib/shmkeep -- /app/server write-abc serve   (shell form)
    const c = runc.start({ args: ['/bin/sh', '-c', [...image.entrypoint!, 'write-abc', 'serve'].join(' ')], env, stateDir: state })
    await c.waitFor(/serve: start 1, count=0/)
    expect(proc(c.hostPid()).cmdline[0]).toBe('/bin/sh')
    const stopped = await c.stop(GRACE)
    expect(stopped.killed).toBe(true)
    expect(stopped.status).toBe(137)
    expect(stopped.stderr).not.toMatch(/forwarded SIGTERM/)
    // shmkeep saw it coming, and said so at start (src/run/shellform.ts).
    expect(stopped.stderr).toMatch(/warning: shmkeep runs under a shell \(sh\) that is PID 1 and does not pass TERM on/)
    expect(generations(state)).toEqual([])

    const next = await runc.run({ args: [...image.entrypoint!, 'read-abc'], env, stateDir: state })
    expect(next.stdout.trim()).toBe('no segment at key 0x162e')
    expect(next.status).toBe(1)
  })

  test('the rootfs holds shmkeep as npm install -g lays it out', (ctx) => {
    if (!runc) return ctx.skip(problem)
    expect(fs.readlinkSync(path.join(runc.rootfs, 'usr/local/bin/shmkeep'))).toBe('../lib/node_modules/shmkeep/bin/shmkeep.js')
    expect(fs.existsSync(path.join(runc.rootfs, SHMKEEP_IN_IMAGE, 'node_modules/node-gyp-build'))).toBe(true)
  })
})
