/**
 * The one reader of /proc for `run`: which processes exist, their state,
 * parent and process group, their threads, their children and command lines
 * (used by app.ts to reap and stop, by freeze.ts to stop and wait, by
 * attachers.ts to name attachers).
 */
import fs from 'node:fs'

export interface ProcStat {
  /** R, S, D, T, t, Z, X… (proc(5)). */
  state: string
  ppid: number
  pgrp: number
}

/** /proc/PID/stat (or one thread's, /proc/PID/task/TID/stat); undefined when it is gone. */
export function procStat(pid: number | string, task?: number | string): ProcStat | undefined {
  try {
    const stat = fs.readFileSync(task === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${task}/stat`, 'utf8')
    // The command name is in parentheses and may contain spaces and ')': split after the last one.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: rest[0]!, ppid: Number(rest[1]), pgrp: Number(rest[2]) }
  } catch {
    return undefined
  }
}

/** Every pid of this PID namespace (as mounted on /proc). */
export function allPids(): number[] {
  try {
    return fs
      .readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
  } catch {
    return []
  }
}

/** Thread states of a process: 'T'/'t' stopped, 'D' uninterruptible, 'Z'/'X' gone. */
export function threadStates(pid: number): string[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map((t) => procStat(pid, t)?.state ?? 'X')
  } catch {
    return ['X']
  }
}

/** "1234 (worker --flag)" for the log. */
export function describeProcess(pid: number): string {
  const cmd = commandLine(pid)
  return cmd === undefined ? String(pid) : `${pid} (${cmd || '?'})`
}

/** The command line, words joined by spaces ('' for a zombie or a kernel thread), or undefined when it is gone. */
export function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')
  } catch {
    return undefined
  }
}

/**
 * How our children are found: `/proc/self/task/<tid>/children` needs
 * CONFIG_PROC_CHILDREN, which some kernels lack; there, every process's stat
 * is scanned for our pid as its parent. SHMKEEP_TEST_PROC_CHILDREN=scan forces
 * the scan (for the tests only: they run on kernels that have the file).
 */
export function childrenSource(): 'task' | 'scan' {
  if (process.env.SHMKEEP_TEST_PROC_CHILDREN === 'scan') return 'scan'
  try {
    const tasks = fs.readdirSync('/proc/self/task')
    fs.accessSync(`/proc/self/task/${tasks[0]}/children`, fs.constants.R_OK)
    return 'task'
  } catch {
    return 'scan'
  }
}

/** Our children right now, orphans we inherited included. */
export function childPids(source: 'task' | 'scan' = childrenSource()): number[] {
  return source === 'task' ? childrenFromTasks() : childrenFromScan()
}

/** From /proc/self/task/<tid>/children (any thread may be the parent). */
function childrenFromTasks(): number[] {
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

/** Every process whose parent is us, from /proc/<pid>/stat (zombies included: they are what is reaped). */
export function childrenFromScan(parent = process.pid): number[] {
  return allPids().filter((pid) => pid !== parent && procStat(pid)?.ppid === parent)
}
