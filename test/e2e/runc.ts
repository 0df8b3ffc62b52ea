/**
 * A real OCI runtime for the recipe tests: Debian's `runc` runs containers
 * from a root filesystem that is built here from the host's own binaries —
 * node and the shared libraries it needs (ldd), dash as /bin/sh, env, tini as
 * /sbin/docker-init (what `docker run --init` uses), the example app, and
 * shmkeep installed as `npm install -g` lays it out
 * (/usr/local/lib/node_modules/shmkeep, /usr/local/bin/shmkeep). The config is
 * `runc spec`'s, edited the way Docker makes it: Docker's 14 default
 * capabilities, private pid/ipc/mount/uts/network namespaces, /proc/sys
 * read-only, a writable root, the state dir bind-mounted like a volume.
 * Stopping is `docker stop -t N`: `runc kill ID TERM`, up to N seconds, then
 * `runc kill ID KILL`, then `runc delete`.
 *
 * Everything runc keeps (its --root) and every bundle lives in one temp dir;
 * `Runc.cleanup()` force-deletes every container this harness started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { root as repo } from '../helpers'

/** Docker's default capability set (moby's oci/caps/defaults.go). */
export const DOCKER_CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
]

const CAP_NUMBERS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_RAW: 13,
  CAP_IPC_OWNER: 15,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_ADMIN: 21,
  CAP_MKNOD: 27,
  CAP_AUDIT_WRITE: 29,
  CAP_SETFCAP: 31,
}

/** The CapEff mask (as /proc/PID/status prints it) of a set of capabilities. */
export function capMask(caps: string[]): bigint {
  let m = 0n
  for (const c of caps) {
    const n = CAP_NUMBERS[c]
    if (n === undefined) throw new Error(`unknown capability ${c}`)
    m |= 1n << BigInt(n)
  }
  return m
}

/** Where shmkeep sits in the root filesystem (as `npm install -g shmkeep` puts it). */
export const SHMKEEP_IN_IMAGE = '/usr/local/lib/node_modules/shmkeep'
/** The state dir of every recipe. */
export const STATE_IN_IMAGE = '/var/lib/shmkeep'

function sh(cmd: string, args: string[], timeout = 60_000) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout })
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : '') }
}

function onPath(program: string): string | undefined {
  const r = sh('sh', ['-c', `command -v ${program}`])
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** Install Debian packages if apt-get is there; returns why not, or ''. */
export function aptInstall(...pkgs: string[]): string {
  if (!onPath('apt-get')) return 'no apt-get here'
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const install = () => spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { encoding: 'utf8', env, timeout: 240_000 })
  let r = install()
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { encoding: 'utf8', env, timeout: 240_000 })
    r = install()
  }
  return r.status === 0 ? '' : `apt-get install ${pkgs.join(' ')} failed: ${(String(r.stderr ?? '') + (r.error ? String(r.error) : '')).trim().split('\n').slice(-2).join(' ')}`
}

/** Shared libraries a dynamic executable needs (from ldd); [] for a static one. */
function libsOf(file: string): string[] {
  const r = sh('ldd', [file])
  if (r.status !== 0) return [] // "not a dynamic executable"
  const out: string[] = []
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line)
    if (m) out.push(m[1]!)
  }
  return out
}

/** Copy a host file into the root filesystem at `dest` (default: the same path), with its libraries. */
function install(rootfs: string, src: string, dest = src, mode = 0o755): void {
  const to = path.join(rootfs, dest)
  fs.mkdirSync(path.dirname(to), { recursive: true })
  fs.copyFileSync(src, to) // follows symlinks, like cp -L
  fs.chmodSync(to, mode)
  for (const lib of libsOf(src)) {
    const libTo = path.join(rootfs, lib)
    if (fs.existsSync(libTo)) continue
    fs.mkdirSync(path.dirname(libTo), { recursive: true })
    fs.copyFileSync(lib, libTo)
  }
}

export interface RootfsOptions {
  /** The example app, compiled on the host (static if it could be). */
  app: string
}

/**
 * Build the image's root filesystem in `dir`/rootfs: what `examples/docker/Dockerfile`
 * produces, from the host's own files.
 */
export function buildRootfs(dir: string, o: RootfsOptions): string {
  const rootfs = path.join(dir, 'rootfs')
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'etc', 'root', 'app', 'usr/local/bin', STATE_IN_IMAGE.slice(1)]) fs.mkdirSync(path.join(rootfs, d), { recursive: true })
  fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777)
  fs.writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n')
  fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
  // The node image's node, and the shell and env every image has.
  install(rootfs, process.execPath, '/usr/local/bin/node')
  install(rootfs, fs.realpathSync(onPath('dash') ?? '/bin/sh'), '/bin/sh')
  install(rootfs, fs.realpathSync(onPath('env') ?? '/usr/bin/env'), '/usr/bin/env')
  // docker run --init: Docker's tini is /sbin/docker-init.
  const tini = ['/usr/bin/tini-static', onPath('tini')].find((f) => f && fs.existsSync(f))
  if (tini) install(rootfs, tini, '/sbin/docker-init')
  // The app: ENTRYPOINT [... "--", "/app/server"].
  install(rootfs, o.app, '/app/server')
  // shmkeep as `npm install -g` lays it out: the package, its one runtime
  // dependency (node-gyp-build) nested inside, the bin linked into /usr/local/bin.
  const pkg = path.join(rootfs, SHMKEEP_IN_IMAGE)
  fs.mkdirSync(pkg, { recursive: true })
  for (const f of ['package.json', 'bin', 'dist']) fs.cpSync(path.join(repo, f), path.join(pkg, f), { recursive: true })
  const addon = path.join(repo, 'build', 'Release', 'shmkeep.node')
  install(rootfs, addon, path.join(SHMKEEP_IN_IMAGE, 'build/Release/shmkeep.node'), 0o644)
  fs.cpSync(path.join(repo, 'node_modules', 'node-gyp-build'), path.join(pkg, 'node_modules', 'node-gyp-build'), { recursive: true })
  fs.chmodSync(path.join(pkg, 'bin', 'shmkeep.js'), 0o755)
  fs.symlinkSync(path.join('..', 'lib', 'node_modules', 'shmkeep', 'bin', 'shmkeep.js'), path.join(rootfs, 'usr/local/bin/shmkeep'))
  return rootfs
}

export interface ContainerSpec {
  /** process.args: the image's ENTRYPOINT + CMD (with --init: docker-init first). */
  args: string[]
  /** Environment besides PATH and HOSTNAME (Dockerfile ENV, docker run -e, ...). */
  env?: Record<string, string>
  /** Host directory mounted read-write at /var/lib/shmkeep (the volume). */
  stateDir: string
  /** Capabilities (default Docker's 14). */
  caps?: string[]
  noNewPrivileges?: boolean
}

export interface Exited {
  status: number
  stdout: string
  stderr: string
}

/** One `runc run` of a container, in the foreground of a child process of ours. */
export class RuncContainer {
  stdout = ''
  stderr = ''
  readonly exited: Promise<Exited>
  /** Whether the stop needed SIGKILL. */
  killed = false
  private readonly child: ChildProcess

  constructor(
    private readonly runc: Runc,
    readonly id: string,
    bundle: string,
  ) {
    this.child = spawn(runc.bin, ['--root', runc.root, 'run', '--bundle', bundle, id], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout!.on('data', (d) => (this.stdout += d))
    this.child.stderr!.on('data', (d) => (this.stderr += d))
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => resolve({ status: code ?? 128 + (signal ? (os.constants.signals[signal] as number) : 0), stdout: this.stdout, stderr: this.stderr }))
    })
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Wait until stdout or stderr matches. */
  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs
    while (!pattern.test(this.stdout) && !pattern.test(this.stderr)) {
      if (!this.running) throw new Error(`container ${this.id} exited before ${pattern}:\n${this.stdout}\n${this.stderr}`)
      if (Date.now() > until) throw new Error(`timed out waiting for ${pattern} in container ${this.id}:\n${this.stdout}\n${this.stderr}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** The container's PID 1 as the host sees it (`runc state`). */
  hostPid(): number {
    const r = sh(this.runc.bin, ['--root', this.runc.root, 'state', this.id])
    if (r.status !== 0) throw new Error(`runc state ${this.id}: ${r.stderr}`)
    return JSON.parse(r.stdout).pid as number
  }

  /** What `docker stop -t grace` does: TERM to PID 1, up to `grace` seconds, KILL, delete. */
  async stop(grace: number): Promise<Exited & { killed: boolean }> {
    const kill = (sig: string) => sh(this.runc.bin, ['--root', this.runc.root, 'kill', this.id, sig])
    const term = kill('TERM')
    if (term.status !== 0 && this.running) throw new Error(`runc kill ${this.id} TERM: ${term.stderr}`)
    const timedOut = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), grace * 1000))])
    if (timedOut) {
      this.killed = true
      kill('KILL')
    }
    const r = await this.exited
    sh(this.runc.bin, ['--root', this.runc.root, 'delete', '--force', this.id])
    return { ...r, killed: this.killed }
  }
}

/** The runtime: a private runc --root, a rootfs, a base config. */
export class Runc {
  readonly root: string
  private readonly bundles: string
  private readonly base: any
  private n = 0
  private readonly started: RuncContainer[] = []

  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly rootfs: string,
  ) {
    this.root = path.join(dir, 'r')
    this.bundles = path.join(dir, 'b')
    fs.mkdirSync(this.root, { recursive: true })
    fs.mkdirSync(this.bundles, { recursive: true })
    const spec = path.join(dir, 'spec')
    fs.mkdirSync(spec)
    const r = sh(bin, ['spec', '--bundle', spec])
    if (r.status !== 0) throw new Error(`runc spec: ${r.stderr}`)
    this.base = JSON.parse(fs.readFileSync(path.join(spec, 'config.json'), 'utf8'))
  }

  /** Find (or install with apt-get) runc; build the rootfs; run a probe container. Returns the runtime or why it cannot run. */
  static setUp(dir: string, o: RootfsOptions): { runc?: Runc; problem?: string } {
    if (process.getuid?.() !== 0) return { problem: 'runc needs root here (the tests run as root under `npm test` only when started as root)' }
    let bin = onPath('runc')
    if (!bin) {
      const why = aptInstall('runc')
      bin = onPath('runc')
      if (!bin) return { problem: `runc is not installed and could not be: ${why}` }
    }
    let runc: Runc
    try {
      runc = new Runc(bin, dir, buildRootfs(dir, o))
    } catch (e) {
      return { problem: `cannot prepare a runc bundle: ${(e as Error).message}` }
    }
    const probe = runc.spawnSync({ args: ['/bin/sh', '-c', 'exit 7'], stateDir: path.join(dir, 'probe-state') })
    if (probe.status !== 7) return { runc, problem: `runc cannot run a container here (exit ${probe.status}): ${probe.stderr.trim() || probe.stdout.trim()}` }
    return { runc }
  }

  /** Write a bundle: config.json from `runc spec`, edited as Docker would make it. */
  private bundle(id: string, c: ContainerSpec): string {
    const cfg = structuredClone(this.base)
    const caps = c.caps ?? DOCKER_CAPS
    cfg.process.terminal = false
    cfg.process.args = c.args
    cfg.process.env = [
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      `HOSTNAME=${id.slice(0, 12)}`,
      ...Object.entries(c.env ?? {}).map(([k, v]) => `${k}=${v}`),
    ]
    cfg.process.capabilities = { bounding: caps, effective: caps, permitted: caps }
    cfg.process.noNewPrivileges = c.noNewPrivileges ?? false // Docker's default
    delete cfg.process.rlimits // Docker sets none by default: the runtime's own limits apply
    cfg.root = { path: this.rootfs, readonly: false }
    cfg.hostname = id.slice(0, 12)
    // Private pid, ipc, mount, uts and network namespaces (runc spec's, checked here).
    cfg.linux.namespaces = ['pid', 'ipc', 'mount', 'uts', 'network'].map((type) => ({ type }))
    // /proc/sys read-only, as Docker has it.
    if (!cfg.linux.readonlyPaths.includes('/proc/sys')) cfg.linux.readonlyPaths.push('/proc/sys')
    fs.mkdirSync(c.stateDir, { recursive: true })
    cfg.mounts.push({ destination: STATE_IN_IMAGE, type: 'bind', source: c.stateDir, options: ['rbind', 'rw'] })
    const dir = path.join(this.bundles, id)
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2))
    return dir
  }

  private nextId(): string {
    return `shmkeep-recipes-${process.pid}-${++this.n}`
  }

  /** Start a container (like `docker run -d`). */
  start(c: ContainerSpec): RuncContainer {
    const id = this.nextId()
    const rc = new RuncContainer(this, id, this.bundle(id, c))
    this.started.push(rc)
    return rc
  }

  /** Run a container to its end (like `docker run --rm`). */
  async run(c: ContainerSpec, timeoutMs = 60_000): Promise<Exited> {
    const rc = this.start(c)
    const timer = setTimeout(() => void rc.stop(0), timeoutMs)
    const r = await rc.exited
    clearTimeout(timer)
    sh(this.bin, ['--root', this.root, 'delete', '--force', rc.id])
    return r
  }

  private spawnSync(c: ContainerSpec): Exited {
    const id = this.nextId()
    const r = spawnSync(this.bin, ['--root', this.root, 'run', '--bundle', this.bundle(id, c), id], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] })
    sh(this.bin, ['--root', this.root, 'delete', '--force', id])
    return { status: r.status ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : '') }
  }

  /** Force-delete every container still known to our runc --root. */
  cleanup(): void {
    for (const c of this.started) if (c.running) sh(this.bin, ['--root', this.root, 'kill', c.id, 'KILL'])
    const list = sh(this.bin, ['--root', this.root, 'list', '-q'])
    for (const id of list.stdout.split('\n').filter(Boolean)) sh(this.bin, ['--root', this.root, 'delete', '--force', id])
  }
}
