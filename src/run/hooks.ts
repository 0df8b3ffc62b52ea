/**
 * Stop and start hooks of `shmkeep run`: shell commands that run once the app
 * has started (--post-start), on TERM before the signal is forwarded
 * (--pre-stop), and after the final snapshot (--post-stop). In order, each
 * with its own timeout; a hook that fails or times out is logged and the
 * next step goes on — the snapshot always keeps its share of the deadline.
 */
import { spawn } from 'node:child_process'
import type { Logger } from '../log'

export type HookKind = 'post-start' | 'pre-stop' | 'post-stop'

export class Hooks {
  /** Pids of running hooks: shmkeep's own helpers, never frozen, signalled or reaped by us (libuv reaps them). */
  readonly pids = new Set<number>()

  constructor(
    private readonly commands: Record<HookKind, string[]>,
    /** Seconds each hook may run. */
    readonly timeout: number,
    private readonly log: Logger,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /** Seconds the hooks that run inside the stop's grace period may take at most. */
  /** The stop hooks' share of the grace period, itemized for the arithmetic in the log. */
  get stopHooks(): { seconds: number; preStop: number; postStop: number; timeout: number } {
    return { seconds: this.stopBudget, preStop: this.commands['pre-stop'].length, postStop: this.commands['post-stop'].length, timeout: this.timeout }
  }

  get stopBudget(): number {
    return (this.commands['pre-stop'].length + this.commands['post-stop'].length) * this.timeout
  }

  /** Run the hooks of one kind, in order. Never throws. */
  async run(kind: HookKind, limitSeconds = this.timeout): Promise<void> {
    for (const command of this.commands[kind]) await this.runOne(kind, command, Math.min(this.timeout, limitSeconds))
  }

  private runOne(kind: HookKind, command: string, timeout: number): Promise<void> {
    const started = performance.now()
    return new Promise((resolve) => {
      // Its own process group (detached), so a timeout can kill all it started.
      const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'inherit', 'inherit'], detached: true, env: this.env })
      const pid = child.pid
      if (pid !== undefined) this.pids.add(pid)
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        try {
          process.kill(-pid!, 'SIGKILL')
        } catch {
          // ended meanwhile
        }
      }, timeout * 1000)
      const done = (what: string, level: 'info' | 'warn') => {
        clearTimeout(timer)
        if (pid !== undefined) this.pids.delete(pid)
        this.log.log(level, `hook.${kind}`, `${kind} hook \`${command}\` ${what} after ${Math.round(performance.now() - started)} ms`, { hook: kind, command })
        resolve()
      }
      child.on('error', (e) => done(`could not start (${e.message})`, 'warn'))
      child.on('exit', (code, signal) => {
        if (timedOut) done(`timed out (${timeout} s) and was killed; going on`, 'warn')
        else if (code === 0) done('finished', 'info')
        else done(`failed (${signal ?? `status ${code}`}); going on`, 'warn')
      })
    })
  }
}
