/**
 * A "container" for end-to-end tests: `unshare --ipc --pid --fork
 * --mount-proc --kill-child` gives a new IPC namespace and a new PID
 * namespace whose PID 1 is the command (shmkeep, or tini). The state dir is on
 * the host, like a volume. Stopping it is what `docker stop -t N` does: TERM
 * to the container's PID 1 (the child of unshare — a signal to unshare itself
 * reaches nobody inside), wait N seconds, KILL.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { binDir, root } from '../helpers'

export const shmkeepBin = path.join(root, 'bin', 'shmkeep.js')
export const legacyApp = path.join(binDir, 'legacy_app')

export interface Exited {
  /** The container's exit status as docker would report it: code, or 128 + signal. */
  status: number
  stdout: string
  stderr: string
}

export class Container {
  readonly child: ChildProcess
  stdout = ''
  stderr = ''
  readonly exited: Promise<Exited>

  private constructor(argv: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn('unshare', ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child', ...argv], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.child.stdout!.on('data', (d) => (this.stdout += d))
    this.child.stderr!.on('data', (d) => (this.stderr += d))
    this.exited = new Promise((resolve) => {
      // 'close', not 'exit': at 'exit' the last lines of the log may still be in the pipe.
      this.child.on('close', (code, signal) => {
        const status = code ?? 128 + (signal ? (require('node:os').constants.signals[signal] as number) : 0)
        resolve({ status, stdout: this.stdout, stderr: this.stderr })
      })
    })
  }

  /** Run argv as PID 1 of a new container. */
  static start(argv: string[], env: NodeJS.ProcessEnv = {}): Container {
    return new Container(argv, env)
  }

  /** `shmkeep run --state-dir DIR [runArgs] -- app...` as PID 1. */
  static shmkeep(stateDir: string, app: string[], runArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Container {
    return new Container([process.execPath, shmkeepBin, 'run', '--state-dir', stateDir, ...runArgs, '--', ...app], env)
  }

  /** The container's PID 1 as seen from the host (waits until it exists). */
  async pid1(): Promise<number> {
    const pid = this.child.pid!
    for (let i = 0; i < 500; i++) {
      try {
        const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
        if (children) return Number(children.split(/\s+/)[0])
      } catch {
        // not there yet
      }
      await new Promise((r) => setTimeout(r, 10))
    }
    throw new Error('the container has no PID 1')
  }

  /** Wait until stderr (the log) matches. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs
    while (!pattern.test(this.stderr) && !pattern.test(this.stdout)) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${pattern}; stderr so far:\n${this.stderr}`)
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`container exited before ${pattern}; stderr:\n${this.stderr}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  async signal(sig: NodeJS.Signals): Promise<void> {
    process.kill(await this.pid1(), sig)
  }

  /** What `docker stop -t grace` does: TERM to PID 1, wait up to grace seconds, then KILL. */
  async stop(grace = 10): Promise<Exited> {
    process.kill(await this.pid1(), 'SIGTERM')
    const timer = setTimeout(() => {
      try {
        this.child.kill('SIGKILL') // unshare --kill-child takes PID 1 (and so the namespace) with it
      } catch {
        // already gone
      }
    }, grace * 1000)
    const r = await this.exited
    clearTimeout(timer)
    return r
  }
}

/** Run one command in a fresh container and wait for it. */
export async function runInContainer(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Exited> {
  return Container.start(argv, env).exited
}
