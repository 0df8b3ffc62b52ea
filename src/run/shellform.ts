/**
 * The shell form, found at start: `CMD shmkeep run …` (or ENTRYPOINT without
 * the JSON array) makes the runtime start `/bin/sh -c "shmkeep run …"` as
 * PID 1. Debian's dash then stays PID 1 with shmkeep as its child and passes
 * no signal on; PID 1 has no handler for TERM, so the kernel drops it, and
 * `docker stop` ends in SIGKILL: the app is killed and nothing is saved. The
 * same happens when bash stays PID 1 (`bash -c "shmkeep run …; echo done"`:
bash execs a lone last command, but not one with more to do after it),
 * and when a shell sits between an init and shmkeep (`tini -- sh -c …`: tini
 * signals the shell, which dies of the TERM and leaves shmkeep unsignalled
 * until the container ends).
 *
 * What is read, from /proc: our parent and its parent — their executable and
 * whether they catch SIGTERM (SigCgt). A shell that catches TERM (a script
 * with `trap … TERM`) may well pass it on: no warning then. Not a shell above
 * us (tini, catatonit, supervisord, a terminal's interactive shell that is not
 * PID 1), or a single-command `bash -c` (bash execs it: shmkeep is PID 1): no
 * warning. Nothing here stops the run: it logs one warning with the fix.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from '../log'

/** Programs that are a shell (busybox's sh shows as busybox). */
const SHELLS = new Set(['sh', 'dash', 'bash', 'ash', 'busybox', 'zsh', 'ksh', 'mksh', 'ksh93', 'yash', 'posh'])
/** Inits that signal only their direct child (tini, docker run --init, podman run --init, dumb-init). */
const INITS = new Set(['tini', 'tini-static', 'docker-init', 'catatonit', 'dumb-init'])
const SIGTERM_BIT = 1n << 14n // SIGTERM is 15: bit 14 of the SigCgt mask

interface Proc {
  pid: number
  ppid: number
  /** The executable's file name (or the command name when /proc/PID/exe cannot be read). */
  name: string
  catchesTerm: boolean
}

function readProc(pid: number, procRoot: string): Proc | undefined {
  try {
    const status = fs.readFileSync(path.join(procRoot, String(pid), 'status'), 'utf8')
    const field = (k: string) => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(status)?.[1]
    let name: string
    try {
      name = path.basename(fs.readlinkSync(path.join(procRoot, String(pid), 'exe')))
    } catch {
      name = field('Name') ?? '?'
    }
    return { pid, ppid: Number(field('PPid') ?? -1), name, catchesTerm: (BigInt('0x' + (field('SigCgt') ?? '0')) & SIGTERM_BIT) !== 0n }
  } catch {
    return undefined // gone, or another user's (hidepid): no guess
  }
}

export interface ShellForm {
  /** The shell that holds TERM back, and its pid. */
  shell: string
  pid: number
  /** How it sits: PID 1 itself, or between an init and shmkeep. */
  as: 'pid1' | 'under-init'
  message: string
}

/** Whether shmkeep (pid `self`) runs under a shell that will not pass `docker stop`'s TERM on. */
export function detectShellForm(self = process.pid, procRoot = '/proc'): ShellForm | undefined {
  const me = readProc(self, procRoot)
  if (!me || me.ppid <= 0) return undefined
  const parent = readProc(me.ppid, procRoot)
  if (!parent || !SHELLS.has(parent.name) || parent.catchesTerm) return undefined
  const fix = 'use the exec form, ENTRYPOINT ["shmkeep", "run", …] (a JSON array), or `exec shmkeep run …` as the last line of the script'
  if (parent.pid === 1) {
    return {
      shell: parent.name,
      pid: parent.pid,
      as: 'pid1',
      message: `shmkeep runs under a shell (${parent.name}) that is PID 1 and does not pass TERM on (the shell form: sh -c "shmkeep run …"): at docker stop the TERM never reaches shmkeep, the app is SIGKILLed and nothing is saved. Fix: ${fix}`,
    }
  }
  const grand = parent.ppid === 1 ? readProc(1, procRoot) : undefined
  if (grand && INITS.has(grand.name)) {
    return {
      shell: parent.name,
      pid: parent.pid,
      as: 'under-init',
      message: `shmkeep runs under a shell (${parent.name}, pid ${parent.pid}) between ${grand.name} and shmkeep: ${grand.name} signals the shell, which does not pass TERM on, so at docker stop the app is SIGKILLed and nothing is saved. Fix: ${fix}`,
    }
  }
  return undefined
}

/** Log the shell-form warning once, if it applies (called by `run` at start). */
export function warnShellForm(log: Logger, self = process.pid): void {
  const found = detectShellForm(self)
  if (found) log.log('warn', 'run.shell-form', found.message, { shell: found.shell, pid: found.pid, as: found.as })
}
