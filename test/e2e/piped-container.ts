/**
 * An unshare "container" (as test/e2e/container.ts makes them) whose stdout is
 * a real pipe, as a container's stdout is under Docker (containerd hands the
 * container FIFOs). Node gives a child a socket, not a pipe, for 'pipe' stdio,
 * and a program that opens /dev/stdout — supervisord's `logfile=/dev/stdout`,
 * the usual container setting — then fails with ENXIO. So the container runs
 * in a shell pipeline: `{ unshare … ARGV; echo $? >STATUS; } | cat`.
 *
 * Stopping is `docker stop -t N`: TERM to the container's PID 1 (the child of
 * unshare), N seconds, then SIGKILL to unshare, whose --kill-child takes PID 1
 * and with it the whole PID namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import type { Exited } from './container'

function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return ''
  }
}

export class PipedContainer {
  readonly child: ChildProcess
  stdout = ''
  stderr = ''
  readonly exited: Promise<Exited>

  constructor(argv: string[], env: NodeJS.ProcessEnv, statusFile: string) {
    fs.rmSync(statusFile, { force: true })
    const script = '{ unshare --ipc --pid --fork --mount-proc --kill-child "$@"; echo $? > "$0"; } | cat'
    this.child = spawn('sh', ['-c', script, statusFile, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout!.on('data', (d) => (this.stdout += d))
    this.child.stderr!.on('data', (d) => (this.stderr += d))
    this.exited = new Promise((resolve) => {
      this.child.on('close', () => {
        const text = fs.existsSync(statusFile) ? fs.readFileSync(statusFile, 'utf8').trim() : ''
        resolve({ status: text === '' ? -1 : Number(text), stdout: this.stdout, stderr: this.stderr })
      })
    })
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** The unshare process (host pid), found among the shell's descendants. */
  private unshare(): number | undefined {
    const queue = [this.child.pid!]
    while (queue.length) {
      const pid = queue.shift()!
      if (pid !== this.child.pid && comm(pid) === 'unshare') return pid
      queue.push(...childrenOf(pid))
    }
    return undefined
  }

  /** The container's PID 1 (host pid). */
  async pid1(): Promise<{ unshare: number; pid1: number }> {
    for (let i = 0; i < 500; i++) {
      const u = this.unshare()
      const p = u && childrenOf(u)[0]
      if (u && p) return { unshare: u, pid1: p }
      await new Promise((r) => setTimeout(r, 10))
    }
    throw new Error('the container has no PID 1')
  }

  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs
    while (!pattern.test(this.stdout) && !pattern.test(this.stderr)) {
      if (!this.running) throw new Error(`container exited before ${pattern}:\n${this.stdout}\n${this.stderr}`)
      if (Date.now() > until) throw new Error(`timed out waiting for ${pattern}:\n${this.stdout}\n${this.stderr}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  /** `docker stop -t grace`. */
  async stop(grace: number): Promise<Exited & { killed: boolean }> {
    const { unshare, pid1 } = await this.pid1()
    process.kill(pid1, 'SIGTERM')
    let killed = false
    const timer = setTimeout(() => {
      killed = true
      try {
        process.kill(unshare, 'SIGKILL')
      } catch {
        // gone
      }
    }, grace * 1000)
    const r = await this.exited
    clearTimeout(timer)
    return { ...r, killed }
  }

  /** Kill whatever is left (afterAll). */
  kill(): void {
    const u = this.unshare()
    if (u) process.kill(u, 'SIGKILL')
    if (this.running) this.child.kill('SIGKILL')
  }
}
