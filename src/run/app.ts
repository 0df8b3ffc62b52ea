/**
 * The app as a process: find its executable (a PATH search, as a shell does),
 * start it in its own process group, learn how it ended, and reap orphans.
 */
import fs from 'node:fs'
import path from 'node:path'
import { native } from '../native'

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
 * SIGTTOU/SIGTTIN.
 */
export function startApp(argv: string[], env: NodeJS.ProcessEnv, foreground: boolean, cgroupProcs?: string): number {
  const file = resolveCommand(argv[0]!, env.PATH)
  const envList = Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]))
  try {
    return native.spawnApp(file, argv, envList, foreground ? 0 : -1, cgroupProcs ?? null)
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

/** Our children right now (/proc/self/task/<tid>/children), orphans we inherited included. */
export function childPids(): number[] {
  const out: number[] = []
  let tasks: string[]
  try {
    tasks = fs.readdirSync('/proc/self/task')
  } catch {
    return out
  }
  for (const tid of tasks) {
    try {
      for (const p of fs.readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim().split(/\s+/)) if (p) out.push(Number(p))
    } catch {
      // the thread ended meanwhile
    }
  }
  return out
}

/**
 * Every process of this PID namespace but us, zombies (our orphans, reaped on
 * SIGCHLD), the pids in `exclude` and the process groups in `excludeGroups`.
 * As PID 1 that is the whole container.
 */
export function otherProcesses(exclude: Set<number>, excludeGroups: Set<number>): number[] {
  const out: number[] = []
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    if (pid === process.pid || exclude.has(pid)) continue
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // A hook's children are in its process group (hooks are group leaders).
      if (state !== 'Z' && !excludeGroups.has(Number(pgrp))) out.push(pid)
    } catch {
      // gone
    }
  }
  return out
}

/** "1234 (worker --flag)" for the log. */
export function describeProcess(pid: number): string {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')
    return `${pid} (${cmd || '?'})`
  } catch {
    return String(pid)
  }
}
