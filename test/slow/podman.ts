/**
 * A real container engine for the recipe tests: podman (Debian's package, the
 * Docker CLI's commands and semantics, no daemon). No image registry is
 * reachable here, so the examples' base image, node:20-bookworm-slim, is made
 * locally: `debootstrap --variant=minbase bookworm` plus this machine's Node 20
 * and npm where the official image has them (/usr/local), `podman import`ed
 * under that name and labelled with the Node version, so that later runs on
 * the same machine reuse it. On these machines runc refuses podman's default
 * rlimits: every container gets `--ulimit nofile=1024:1024 --ulimit
 * nproc=1024:1024`, and a containers.conf with the same default_ulimits
 * (CONTAINERS_CONF) covers `podman build`'s RUN steps and `podman kube play`,
 * which takes no --ulimit.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { run, type ChildResult } from '../helpers'
import { aptInstall } from '../e2e/runc'

export const BASE_IMAGE = 'localhost/node:20-bookworm-slim'
export const ULIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024']
const BASE_LABEL = 'io.shmkeep.test.base'

const have = (cmd: string) => run('sh', ['-c', `command -v ${cmd}`]).status === 0

export class Podman {
  readonly env: NodeJS.ProcessEnv
  log = ''

  constructor(dir: string) {
    const conf = path.join(dir, 'containers.conf')
    fs.writeFileSync(conf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n')
    this.env = { ...process.env, CONTAINERS_CONF: conf }
  }

  /** podman ARGS; the result, with every call kept in `log` for failure messages. */
  run(args: string[], { timeout = 600_000, cwd }: { timeout?: number; cwd?: string } = {}): ChildResult {
    const r = run('podman', args, { env: this.env, timeout, cwd, maxBuffer: 64 << 20 })
    this.log += `\n$ podman ${args.join(' ')}\n${r.stdout.slice(-2000)}${r.stderr.slice(-2000)}`
    return r
  }

  /** podman ARGS, which must succeed. */
  ok(args: string[], o: { timeout?: number; cwd?: string } = {}): string {
    const r = this.run(args, o)
    if (r.status !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.status}): ${r.stderr.trim().split('\n').slice(-5).join('\n')}`)
    return r.stdout
  }

  /** `podman logs` of a container (stdout and stderr together). */
  logs(name: string): string {
    const r = run('podman', ['logs', name], { env: this.env })
    return r.stdout + r.stderr
  }

  /** Wait until the container's log matches (count: how many times). */
  async waitLog(name: string, pattern: RegExp, { count = 1, timeoutMs = 120_000 } = {}): Promise<string> {
    const until = Date.now() + timeoutMs
    const global = new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g')
    for (;;) {
      const text = this.logs(name)
      if ((text.match(global) ?? []).length >= count) return text
      if (Date.now() > until) throw new Error(`timed out waiting for ${pattern} (x${count}) in the log of ${name}:\n${text}`)
      await new Promise((r) => setTimeout(r, 250))
    }
  }

  /** Remove containers, pods and volumes by name, whatever state they are in. */
  remove({ containers = [] as string[], pods = [] as string[], volumes = [] as string[] }): void {
    for (const p of pods) run('podman', ['pod', 'rm', '-f', '-t', '0', p], { env: this.env })
    for (const c of containers) run('podman', ['rm', '-f', '-t', '0', c], { env: this.env })
    for (const v of volumes) run('podman', ['volume', 'rm', '-f', v], { env: this.env })
  }

  /** podman itself, and whether it can run a container here; the reason when it cannot. */
  static setUp(dir: string): { podman?: Podman; problem?: string } {
    if (process.getuid?.() !== 0) return { problem: 'podman tests run as root here' }
    if (!have('podman') || !fs.existsSync('/usr/libexec/podman/catatonit')) {
      const why = aptInstall('podman', 'catatonit')
      if (!have('podman')) return { problem: `podman is not installed and could not be: ${why}` }
    }
    return { podman: new Podman(dir) }
  }

  /**
   * The base image of the examples, made here once per machine (and again
   * when this Node changes): Debian bookworm minbase + /usr/bin/node + npm.
   */
  baseImage(dir: string): string {
    const want = `node-${process.version}`
    const have = this.run(['image', 'inspect', '--format', `{{index .Labels "${BASE_LABEL}"}}`, BASE_IMAGE])
    if (have.status === 0 && have.stdout.trim() === want) return `${BASE_IMAGE} (cached, ${want})`
    if (!fs.existsSync('/usr/sbin/debootstrap')) {
      const why = aptInstall('debootstrap')
      if (!fs.existsSync('/usr/sbin/debootstrap')) throw new Error(`debootstrap is not installed and could not be: ${why}`)
    }
    const rootfs = path.join(dir, 'base-rootfs')
    const boot = run('debootstrap', ['--variant=minbase', 'bookworm', rootfs, 'http://deb.debian.org/debian'], { timeout: 1_200_000 })
    if (boot.status !== 0) throw new Error(`debootstrap --variant=minbase bookworm failed: ${(boot.stdout + boot.stderr).trim().split('\n').slice(-5).join('\n')}`)
    // Node where the official image has it; its shared libraries are minbase's (libc, libstdc++, libgcc).
    const at = (p: string) => path.join(rootfs, p)
    fs.mkdirSync(at('usr/local/bin'), { recursive: true })
    fs.copyFileSync(process.execPath, at('usr/local/bin/node'))
    fs.chmodSync(at('usr/local/bin/node'), 0o755)
    const npmRoot = path.resolve(fs.realpathSync(run('sh', ['-c', 'command -v npm']).stdout.trim()), '..', '..')
    fs.cpSync(npmRoot, at('usr/local/lib/node_modules/npm'), { recursive: true, verbatimSymlinks: true })
    fs.symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', at('usr/local/bin/npm'))
    fs.symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', at('usr/local/bin/npx'))
    // The official image's user node (uid 1000).
    fs.appendFileSync(at('etc/passwd'), 'node:x:1000:1000::/home/node:/bin/sh\n')
    fs.appendFileSync(at('etc/group'), 'node:x:1000:\n')
    fs.mkdirSync(at('home/node'), { recursive: true })
    fs.chownSync(at('home/node'), 1000, 1000)
    for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      for (const f of fs.readdirSync(at(d))) if (f.endsWith('.deb') || (d.endsWith('lists') && f !== 'partial' && f !== 'lock')) fs.rmSync(at(path.join(d, f)), { force: true })
    }
    const tar = spawnSync('sh', ['-c', `tar -C '${rootfs}' -c . | podman import --change 'CMD ["node"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'LABEL ${BASE_LABEL}=${want}' - ${BASE_IMAGE}`], {
      env: this.env,
      encoding: 'utf8',
      timeout: 600_000,
    })
    fs.rmSync(rootfs, { recursive: true, force: true })
    if (tar.status !== 0) throw new Error(`podman import failed: ${tar.stderr}`)
    return `${BASE_IMAGE} (built now, ${want})`
  }
}
