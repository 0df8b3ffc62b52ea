/**
 * The app as a process: find its executable (a PATH search, as a shell does),
 * start it in its own process group, learn how it ended, and reap orphans.
 */
import fs from 'node:fs'
import path from 'node:path'
import { native } from '../native'
import type { Logger } from '../log'
import { allPids, childPids, childrenSource, procStat } from './proc'

/** How a process ended. */
export type Ending = { code: number } | { signal: number }

/** The shell's exit status for an ending: the code, or 128 + the signal. */
export function exitStatus(e: Ending): number {
  return 'code' in e ? e.code : 128 + e.signal
}

/** An app that cannot be started; `status` is 127 (not found) or 126 (not executable), as shells do. */
export class StartError extends Error {
  constructor(
    message: string,
    readonly status: 126 | 127,
  ) {
    super(message)
  }
}

/** The executable a command name means: as given when it has a slash, else searched in PATH. */
export function resolveCommand(command: string, envPath = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'): string {
  if (command === '') throw new StartError('empty command', 127)
  const candidates = command.includes('/') ? [command] : envPath.split(':').map((dir) => path.join(dir || '.', command))
  let notExecutable: string | undefined
  for (const file of candidates) {
    let st: fs.Stats
    try {
      st = fs.statSync(file)
    } catch {
      continue
    }
    if (st.isDirectory()) {
      notExecutable ??= `${file} is a directory`
      continue
    }
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return path.resolve(file)
    } catch {
      notExecutable ??= `${file} is not executable`
    }
  }
  if (notExecutable) throw new StartError(`cannot run ${command}: ${notExecutable}`, 126)
  throw new StartError(`cannot run ${command}: not found${command.includes('/') ? '' : ' in PATH'}`, 127)
}

/**
 * Start the app in a process group of its own (setpgid, not setsid: it stays
 * in our session). With `foreground`, the group becomes the terminal's
 * foreground group, so Ctrl-C reaches the app once and it is never stopped by
 * SIGTTOU/SIGTTIN. `started(pid)` runs once the process exists and before it
 * may exec the app: a log line written there comes before the app's output.
 */
export function startApp(argv: string[], env: NodeJS.ProcessEnv, foreground: boolean, cgroupProcs?: string, started?: (pid: number) => void): number {
  const file = resolveCommand(argv[0]!, env.PATH)
  const envList = Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]))
  try {
    return native.spawnApp(file, argv, envList, foreground ? 0 : -1, cgroupProcs ?? null, started)
  } catch (e) {
    const { errno, syscall } = e as { errno?: number; syscall?: string }
    if (syscall === 'cgroup.procs') throw new StartError(`cannot move ${argv[0]} into its cgroup (${cgroupProcs}): ${(e as Error).message}`, 126)
    if (errno === 2) throw new StartError(`cannot run ${argv[0]}: not found`, 127)
    throw new StartError(`cannot run ${argv[0]}: ${(e as Error).message}`, 126)
  }
}

/** Reap `pid` if it ended: its ending, or null while it runs. */
export function reap(pid: number): Ending | null {
  try {
    return native.waitPid(pid)
  } catch {
    return null // ECHILD: not ours (any more)
  }
}

/**
 * Every process of this PID namespace but us, zombies (our orphans, reaped on
 * SIGCHLD), the pids in `exclude` and the process groups in `excludeGroups`.
 * As PID 1 that is the whole container.
 */
export function otherProcesses(exclude: Set<number>, excludeGroups: Set<number>): number[] {
  return allPids().filter((pid) => {
    if (pid === process.pid || exclude.has(pid)) return false
    const stat = procStat(pid)
    // A hook's children are in its process group (hooks are group leaders).
    return stat !== undefined && stat.state !== 'Z' && !excludeGroups.has(stat.pgrp)
  })
}

/**
 * Reaping while the app runs: the app (its ending is run's status) and every
 * orphan that comes to us as PID 1 or as a child subreaper — on SIGCHLD, and
 * once a second in case a signal was coalesced. Hooks are libuv's children:
 * reaping them here would steal their status.
 */
export class Reaper {
  /** Resolves with how the app ended. */
  readonly ended: Promise<Ending>
  /** How the app ended, once it did. */
  ending: Ending | undefined
  private resolve!: (e: Ending) => void
  private readonly poll: NodeJS.Timeout
  private readonly source = childrenSource()

  constructor(
    private readonly app: number,
    /** Pids never reaped here (running hooks). */
    private readonly skip: () => Set<number>,
    private readonly log: Logger,
    /** Also run once a second (pins' scan). */
    onPoll: () => void = () => {},
  ) {
    this.ended = new Promise((resolve) => (this.resolve = resolve))
    if (this.source === 'scan') {
      log.log('info', 'reap', 'this kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN): orphans are found by scanning /proc/*/stat')
    }
    process.on('SIGCHLD', this.reapAll)
    this.poll = setInterval(() => {
      this.reapAll()
      onPoll()
    }, 1000)
    this.reapAll()
  }

  private readonly reapAll = (): void => {
    if (!this.ending) {
      const e = reap(this.app)
      if (e) {
        this.ending = e
        this.resolve(e)
      }
    }
    const skip = this.skip()
    for (const pid of childPids(this.source)) {
      if (pid === this.app || skip.has(pid)) continue
      const e = reap(pid)
      if (e) this.log.log('debug', 'reap', `reaped orphan ${pid} (status ${exitStatus(e)})`)
    }
  }

  /** Stop reaping (the app's status is known; the final snapshot is done). */
  close(): void {
    clearInterval(this.poll)
    process.removeListener('SIGCHLD', this.reapAll)
  }
}
