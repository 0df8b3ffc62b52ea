/**
 * The deployment recipes with a real container engine, podman, the way an
 * operator runs them: `npm pack`, `podman build` of every example Dockerfile
 * (shmkeep from the tarball, no compiler, no registry), then
 *   podman run -d -v VOLUME:/var/lib/shmkeep IMAGE
 *   podman exec C /app/server write-abc          (the writer: 'a'..'z' at key 0x162e)
 *   podman stop -t 10 C; podman start C           (a new IPC namespace)
 *   podman exec C /app/server read-abc           → a b c … z
 * for examples/docker (shmkeep as PID 1, and under `--init`: catatonit),
 * examples/shell-entrypoint and examples/supervisord; the shell form loses the
 * data (and shmkeep warns); `podman kube play` of the StatefulSet's pod
 * template (catatonit's infra container holds the pod's IPC namespace, as
 * Kubernetes' pause container does): a container restarted in its pod keeps the
 * live segments, a pod deleted and played again restores from its volume;
 * and podman-compose on the compose file.
 *
 * Time budget: about 15 min on a machine that has never run it (debootstrap
 * of the base image ~6 min, the image builds with apt-get of gcc and
 * supervisor ~5 min), 3–4 min after that (the base image and the build layers
 * stay in podman's storage; the base is rebuilt when Node's version changes).
 * Containers, pods and volumes are named shmkeep-test-*, removed at the end.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { root, run, tempDir } from '../helpers'
import { loadYamlAll, yamlLoader } from '../e2e/recipe-files'
import { npmEnv, npmIn, stageSources } from '../install-kit'
import { Podman, ULIMITS } from './podman'

const ABC = 'a b c d e f g h i j k l m n o p q r s t u v w x y z'
const P = 'shmkeep-test'
const images = {
  docker: `localhost/${P}-counter`,
  shell: `localhost/${P}-counter-sh`,
  supervisord: `localhost/${P}-counter-supervisord`,
  workers: `localhost/${P}-counter-workers`,
  shellForm: `localhost/${P}-counter-shellform`,
}

let tmp: { dir: string; cleanup(): void }
let podman: Podman | undefined
let problem = ''
let ctxDir = ''
const made = { containers: [] as string[], pods: [] as string[], volumes: [] as string[] }

beforeAll(() => {
  tmp = tempDir()
  const r = Podman.setUp(tmp.dir)
  if (!r.podman) {
    problem = r.problem!
    return
  }
  podman = r.podman
  const base = podman.baseImage(tmp.dir)
  console.log(`podman.test.ts: base image ${base}`)

  // The build context the examples expect: the repository root with `npm pack`'s
  // tarball in it (.dockerignore lets only examples/ and the tarball through).
  const stage = path.join(tmp.dir, 'stage')
  stageSources(stage)
  const prebuild = path.join(stage, 'prebuilds', `linux-${process.arch}`, 'shmkeep.glibc.node')
  fs.mkdirSync(path.dirname(prebuild), { recursive: true })
  fs.copyFileSync(path.join(root, 'build', 'Release', 'shmkeep.node'), prebuild) // the base image is bookworm: this machine's glibc
  const pack = npmIn(stage, ['pack'], npmEnv(path.join(tmp.dir, 'npmrc')), { offline: false })
  if (pack.status !== 0) throw new Error(`npm pack failed: ${pack.stderr}`)
  ctxDir = stage

  const build = (dockerfile: string, tag: string) => podman!.ok(['build', '--pull=never', ...ULIMITS, '-f', dockerfile, '-t', tag, '.'], { cwd: ctxDir, timeout: 1_200_000 })
  build('examples/docker/Dockerfile', images.docker)
  build('examples/shell-entrypoint/Dockerfile', images.shell)
  build('examples/supervisord/Dockerfile', images.supervisord)
  build('examples/supervisord/Dockerfile.workers', images.workers)
  // The mistake the docs warn about: the same image with a shell-form ENTRYPOINT.
  const shellForm = path.join(tmp.dir, 'Containerfile.shellform')
  fs.writeFileSync(shellForm, `FROM ${images.docker}\nENTRYPOINT shmkeep run --state-dir /var/lib/shmkeep -- /app/server serve\n`)
  podman.ok(['build', '--pull=never', ...ULIMITS, '-f', shellForm, '-t', images.shellForm, tmp.dir])
}, 2_400_000)

afterAll(() => {
  podman?.remove(made)
  tmp?.cleanup()
})

let n = 0
function names(kind: string) {
  const c = `${P}-${kind}-${++n}`
  made.containers.push(c)
  made.volumes.push(`${c}-state`)
  return { container: c, volume: `${c}-state` }
}

function execIn(name: string, ...argv: string[]) {
  return podman!.run(['exec', name, ...argv])
}

/**
 * The seeds' scenario in one container: run -d with a named volume, the writer
 * through exec, stop -t, start (a new IPC namespace), the reader through exec.
 */
async function stopStart(image: string, { runArgs = [] as string[], ready, stopTimeout = 10, kind }: { runArgs?: string[]; ready: RegExp; stopTimeout?: number; kind: string }) {
  const { container, volume } = names(kind)
  podman!.ok(['run', '-d', '--name', container, ...ULIMITS, ...runArgs, '-v', `${volume}:/var/lib/shmkeep`, image])
  await podman!.waitLog(container, ready)
  const write = execIn(container, '/app/server', 'write-abc')
  expect(write.status, write.stderr).toBe(0)
  podman!.ok(['stop', '-t', String(stopTimeout), container], { timeout: (stopTimeout + 60) * 1000 })
  const exitCode = Number(podman!.ok(['inspect', '--format', '{{.State.ExitCode}}', container]).trim())
  const firstLog = podman!.logs(container)
  podman!.ok(['start', container])
  const log = await podman!.waitLog(container, ready, { count: 2 })
  const read = execIn(container, '/app/server', 'read-abc')
  podman!.ok(['stop', '-t', String(stopTimeout), container], { timeout: (stopTimeout + 60) * 1000 })
  return { container, exitCode, firstLog, log, read }
}

describe('podman: every example image builds from npm pack’s tarball and keeps a b c … z across stop/start', () => {
  test('examples/docker/Dockerfile: shmkeep as PID 1', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.docker, { kind: 'docker', ready: /serve: start \d+, count=/ })
    expect(r.exitCode, r.firstLog).toBe(0) // stopped by TERM, not SIGKILLed
    expect(r.firstLog).toMatch(/forwarded SIGTERM to the app/)
    expect(r.firstLog).toMatch(/snapshot gen-000000000001: 1 segment\(s\)/)
    expect(r.log).toMatch(/restored 1 segment\(s\) from gen-000000000001/)
    expect(r.read.stdout.trim(), r.read.stderr).toBe(ABC)
    expect(r.log).not.toMatch(/runs under a shell/)
    // The image: shmkeep installed globally from the tarball, with its prebuild; nothing compiled, no compiler.
    const inImage = podman!.run(['run', '--rm', ...ULIMITS, '--entrypoint', 'sh', images.docker, '-c', 'ls /usr/local/lib/node_modules/shmkeep; command -v cc gcc g++ make || echo no-compiler'])
    expect(inImage.stdout).toMatch(/prebuilds/)
    expect(inImage.stdout).not.toMatch(/^build$/m)
    expect(inImage.stdout).toMatch(/no-compiler/)
  })

  test('examples/docker/Dockerfile with --init (catatonit as PID 1, shmkeep its child)', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.docker, { kind: 'init', runArgs: ['--init'], ready: /serve: start \d+, count=/ })
    expect(r.exitCode, r.firstLog).toBe(0)
    expect(r.firstLog).toMatch(/forwarded SIGTERM to the app/)
    expect(r.firstLog).not.toMatch(/cannot become a child subreaper|runs under a shell/)
    expect(r.log).toMatch(/restored 1 segment\(s\)/)
    expect(r.read.stdout.trim(), r.read.stderr).toBe(ABC)
  })

  test('examples/shell-entrypoint/Dockerfile: the script as PID 1 (restore, app, trap, snapshot)', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.shell, { kind: 'sh', ready: /serve: start \d+, count=/ })
    expect(r.exitCode, r.firstLog).toBe(0)
    expect(r.firstLog).toMatch(/entrypoint: app exited with status 0/)
    expect(r.firstLog).toMatch(/snapshot gen-000000000001: 1 segment\(s\)/)
    expect(r.log).toMatch(/restored 1 segment\(s\) from gen-000000000001/)
    expect(r.read.stdout.trim(), r.read.stderr).toBe(ABC)
  })

  test('examples/supervisord/Dockerfile: shmkeep over supervisord -n (podman stop -t 30)', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.supervisord, { kind: 'sv', stopTimeout: 30, ready: /success: workers entered RUNNING state/ })
    expect(r.exitCode, r.firstLog).toBe(0)
    expect(r.firstLog).toMatch(/snapshot gen-000000000001: 2 segment\(s\)/)
    expect(r.firstLog).not.toMatch(/runs under a shell|inconsistent/)
    expect(r.log).toMatch(/restored 2 segment\(s\)/)
    expect(r.read.stdout.trim(), r.read.stderr).toBe(ABC)
  })

  test('examples/supervisord/Dockerfile.workers: --signal-group over a pre-fork app', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.workers, { kind: 'workers', ready: /serve: 3 workers running/ })
    expect(r.exitCode, r.firstLog).toBe(0)
    expect(r.firstLog).toMatch(/forwarded SIGTERM to the app's process group/)
    expect(r.firstLog).not.toMatch(/inconsistent/)
    expect(r.read.stdout.trim(), r.read.stderr).toBe(ABC)
  })

  test('(control) the shell form, ENTRYPOINT shmkeep run …: shmkeep warns at start, podman stop ends in SIGKILL, the data is lost', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const r = await stopStart(images.shellForm, { kind: 'shellform', ready: /serve: start \d+, count=/ })
    expect(r.firstLog).toMatch(/warning: shmkeep runs under a shell \(dash\) that is PID 1 and does not pass TERM on/)
    expect(r.exitCode).toBe(137)
    expect(r.firstLog).not.toMatch(/forwarded SIGTERM|snapshot gen-/)
    expect(r.log).toMatch(/nothing to restore \(empty state dir\): a first start/)
    // serve made a new, empty table: 26 empty slots, not a..z.
    expect(r.read.stdout.trim()).toBe(Array(26).fill('.').join(' '))
  })
})

describe('podman kube play: the StatefulSet’s pod template', () => {
  test('a container restarted inside the pod keeps the live segment, even when the volume’s copy is damaged; a pod deleted and played again restores from its volume', async (ctx) => {
    if (problem) return ctx.skip(problem)
    const { problem: noYaml } = yamlLoader()
    if (noYaml) return ctx.skip(noYaml)
    const docs = loadYamlAll(path.join(root, 'examples', 'kubernetes', 'statefulset.yaml'))
    const sts = docs.find((d) => d.kind === 'StatefulSet')
    const spec = sts.spec.template.spec
    const [container] = spec.containers
    // kube play runs Pods, not StatefulSets: the template as the controller would
    // stamp it (pod <name>-0, its claim <template>-<name>-0), the image ours.
    const podName = `${sts.metadata.name}-0`
    const claim = sts.spec.volumeClaimTemplates[0]
    const claimName = `${claim.metadata.name}-${podName}`
    container.image = images.docker
    spec.volumes = [{ name: claim.metadata.name, persistentVolumeClaim: { claimName } }]
    // podman stops a pod whose containers have all exited (Kubernetes keeps it): a
    // sidecar keeps it up while the app's container is stopped.
    spec.containers.push({ name: 'sidecar', image: images.docker, command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'] })
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: podName, labels: sts.spec.template.metadata.labels }, spec }
    const pvc = { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: claimName }, spec: claim.spec }
    const withClaim = path.join(tmp.dir, 'pod-and-claim.json')
    const podOnly = path.join(tmp.dir, 'pod.json')
    // JSON is YAML: kube play reads either.
    fs.writeFileSync(withClaim, [pvc, pod].map((d) => JSON.stringify(d)).join('\n---\n'))
    fs.writeFileSync(podOnly, JSON.stringify(pod))
    const c = `${podName}-${container.name}`
    podman!.remove({ pods: [podName], volumes: [claimName] })
    made.pods.push(podName)
    made.volumes.push(claimName)

    podman!.ok(['kube', 'play', withClaim])
    const infra = podman!.ok(['pod', 'inspect', '--format', '{{.InfraContainerID}}', podName]).trim()
    expect(podman!.ok(['inspect', '--format', '{{.Config.Entrypoint}} {{.Path}}', infra])).toMatch(/catatonit/)
    await podman!.waitLog(c, /serve: start 1, count=/)
    const asApp = [...container.args.slice(0, -1)] // --uid 1000 --mode 0600: the app's own user
    expect(execIn(c, '/app/server', ...asApp, 'write-abc').status).toBe(0)

    // A graceful restart of the container (the pod stays): snapshot at stop, then the live segment is kept.
    podman!.ok(['restart', '-t', String(spec.terminationGracePeriodSeconds), c], { timeout: 120_000 })
    let log = await podman!.waitLog(c, /serve: start 2, count=/)
    expect(log).toMatch(/snapshot gen-000000000001: 1 segment\(s\)/)
    // Warm: the pod's IPC namespace holds shmkeep's lineage record, so nothing is restored over the live segment.
    expect(log).toMatch(/nothing restored: this IPC namespace already holds the state of gen-000000000001/)
    // Live state wins over the volume: with the container stopped (the pod and its IPC
    // namespace stay: a sidecar keeps podman from stopping the pod), the saved data is
    // damaged; a restore would now fail (exit 125), but the segment is live and kept.
    podman!.ok(['stop', '-t', String(spec.terminationGracePeriodSeconds), c], { timeout: 120_000 })
    const state = podman!.ok(['volume', 'inspect', '--format', '{{.Mountpoint}}', claimName]).trim()
    const current = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
    const data = fs.readdirSync(path.join(state, current)).filter((f) => f.endsWith('.data'))
    expect(data.length).toBeGreaterThan(0)
    for (const f of data) {
      const bytes = fs.readFileSync(path.join(state, current, f))
      bytes[0]! ^= 0xff
      fs.writeFileSync(path.join(state, current, f), bytes)
    }
    podman!.ok(['start', c])
    log = await podman!.waitLog(c, /serve: start 3, count=/)
    expect(log.split('nothing restored: this IPC namespace already holds the state of').length - 1).toBe(2)
    expect(execIn(c, '/app/server', ...asApp, 'get').stdout, log).toMatch(/starts=3 /)
    expect(execIn(c, '/app/server', ...asApp, 'read-abc').stdout.trim()).toBe(ABC)
    // Repaired again, so that the pod's deletion below is judged on its own.
    for (const f of data) {
      const bytes = fs.readFileSync(path.join(state, current, f))
      bytes[0]! ^= 0xff
      fs.writeFileSync(path.join(state, current, f), bytes)
    }

    // The pod deleted (TERM, snapshot, gone with its IPC namespace) and played again: restored from the claim.
    // As the kubelet deletes a pod: TERM, the grace period, then the pod is gone. (podman
    // 4.3's `kube down` alone gave shmkeep no stop that it could snapshot in.)
    podman!.ok(['pod', 'stop', '-t', String(spec.terminationGracePeriodSeconds), podName], { timeout: 120_000 })
    podman!.ok(['kube', 'down', withClaim], { timeout: 120_000 })
    expect(podman!.run(['pod', 'exists', podName]).status).toBe(1)
    podman!.ok(['kube', 'play', podOnly]) // the claim outlives the pod, as a PVC does
    log = await podman!.waitLog(c, /serve: start \d+, count=/)
    // starts=4: the snapshot taken at the pod's deletion (starts=3) is what came back.
    expect(log).toMatch(/restored 1 segment\(s\) from gen-000000000003/)
    expect(log).toMatch(/serve: start 4, count=/)
    expect(execIn(c, '/app/server', ...asApp, 'read-abc').stdout.trim()).toBe(ABC)
    const meta = execIn(c, 'sh', '-c', 'cat /var/lib/shmkeep/$(cat /var/lib/shmkeep/CURRENT)/GENERATION')
    expect(meta.stdout).toMatch(/"reason": ?"stop"/)
    podman!.ok(['kube', 'down', podOnly], { timeout: 120_000 })
  })
})

describe('podman-compose on examples/compose/docker-compose.yml', () => {
  test('up -d --build, the writer, stop, up -d again: a b c … z', async (ctx) => {
    if (problem) return ctx.skip(problem)
    if (run('sh', ['-c', 'command -v podman-compose']).status !== 0) return ctx.skip('podman-compose is not installed (apt-get install podman-compose)')
    const compose = ['-p', `${P}-compose`, '-f', 'examples/compose/docker-compose.yml']
    const pc = (...args: string[]) => run('podman-compose', [...compose, ...args], { cwd: ctxDir, env: podman!.env, timeout: 1_200_000 })
    pc('down', '-v')
    const c = `${P}-compose_counter_1`
    made.containers.push(c)
    made.volumes.push(`${P}-compose_counter-state`)
    const up = pc('up', '-d', '--build')
    expect(up.status, up.stdout + up.stderr).toBe(0)
    // What it made of the file: init: true → --init, the named volume, SHMKEEP_GRACE.
    expect(up.stdout).toMatch(/--init/)
    expect(up.stdout).toMatch(/-v shmkeep-test-compose_counter-state:\/var\/lib\/shmkeep/)
    await podman!.waitLog(c, /serve: start 1, count=/)
    expect(execIn(c, '/app/server', 'write-abc').status).toBe(0)
    const stop = pc('stop')
    expect(stop.status, stop.stderr).toBe(0)
    const up2 = pc('up', '-d')
    expect(up2.status, up2.stdout + up2.stderr).toBe(0)
    const log = await podman!.waitLog(c, /serve: start 2, count=/)
    expect(log).toMatch(/snapshot gen-000000000001: 1 segment\(s\)/)
    expect(log).toMatch(/restored 1 segment\(s\)/)
    expect(execIn(c, '/app/server', 'read-abc').stdout.trim()).toBe(ABC)
    const down = pc('down', '-v')
    expect(down.status, down.stderr).toBe(0)
  })
})
