/**
 * Freezing the app for a periodic checkpoint, so that the copy is an image of
 * one instant (crash-consistent: what a power cut at that instant would
 * leave — a process-shared mutex held then stays held in the image).
 *
 * - sigstop: SIGSTOP every process of the container except shmkeep and its
 *   own helpers (as PID 1), or every process of the app's process group;
 *   list again until no new pid appears (a fork can race the first pass);
 *   wait until every thread shows stopped. A thread in uninterruptible sleep
 *   (D) past the bound makes us resume everything and skip the checkpoint.
 *   Exactly the processes we stopped are resumed (SIGCONT).
 * - cgroup: the app runs in a cgroup v2 of its own (a child of shmkeep's);
 *   cgroup.freeze=1 and wait for `frozen 1` in cgroup.events.
 */
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { allPids, procStat, threadStates } from './proc'

export interface Freezer {
  /** Stop the app; resolves with why it could not (then nothing stays stopped). */
  freeze(): Promise<{ ok: true } | { ok: false; reason: string }>
  /** Resume what freeze() stopped. Idempotent. */
  thaw(): void
}

export class SigstopFreezer implements Freezer {
  private stopped: number[] = []

  /**
   * @param scope which pids belong to the app right now
   * @param boundMs how long threads may take to stop
   */
  constructor(
    private readonly scope: () => number[],
    private readonly boundMs = 2000,
  ) {}

  /** As PID 1: every process but shmkeep and the process groups in `excludeGroups` (hooks); else the app's process group. */
  static forContainer(isInit: boolean, appPgid: number, excludeGroups: () => Set<number>, boundMs?: number): SigstopFreezer {
    const scope = isInit
      ? () => {
          const skip = excludeGroups()
          return allPids().filter((p) => p !== process.pid && !skip.has(procStat(p)?.pgrp ?? -1))
        }
      : () => allPids().filter((p) => procStat(p)?.pgrp === appPgid)
    return new SigstopFreezer(scope, boundMs)
  }

  async freeze(): Promise<{ ok: true } | { ok: false; reason: string }> {
    const seen = new Set<number>()
    for (let round = 0; round < 100; round++) {
      const fresh = this.scope().filter((p) => !seen.has(p))
      if (fresh.length === 0) break
      for (const pid of fresh) {
        seen.add(pid)
        try {
          process.kill(pid, 'SIGSTOP')
          this.stopped.push(pid)
        } catch {
          // gone already
        }
      }
    }
    const until = Date.now() + this.boundMs
    for (;;) {
      const running = this.stopped.filter((pid) => threadStates(pid).some((s) => !'TtZX'.includes(s)))
      if (running.length === 0) return { ok: true }
      if (Date.now() >= until) {
        const stuck = running.filter((pid) => threadStates(pid).includes('D'))
        this.thaw()
        return {
          ok: false,
          reason: stuck.length
            ? `pid ${stuck.join(', ')} stayed in uninterruptible sleep (D) for ${this.boundMs} ms`
            : `pid ${running.join(', ')} did not stop within ${this.boundMs} ms`,
        }
      }
      await sleep(1)
    }
  }

  thaw(): void {
    for (const pid of this.stopped.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {
        // gone meanwhile
      }
    }
  }
}

/** Where cgroup2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid (v1 + v2) hosts. */
function cgroup2Mount(): string | undefined {
  try {
    const line = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2')
    return line?.split(' ')[1]
  } catch {
    return undefined
  }
}

/** This process's cgroup v2 directory, or undefined without cgroup v2. */
export function ownCgroup(): string | undefined {
  try {
    const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))
    const mount = cgroup2Mount()
    return line && mount ? path.join(mount, line.slice(3)) : undefined
  } catch {
    return undefined
  }
}

/**
 * The app's own cgroup: `<shmkeep's cgroup>/shmkeep-app-<tag>`, with shmkeep
 * moved to a sibling `shmkeep-supervisor-<tag>` (cgroup v2 allows processes only in leaves
 * once controllers are enabled below, and shmkeep must not freeze itself).
 */
export class CgroupFreezer implements Freezer {
  private frozen = false

  private constructor(
    readonly parent: string,
    readonly app: string,
    readonly supervisor: string,
    private readonly boundMs: number,
  ) {}

  /** Set up, or throw saying why the cgroup freezer cannot be used here. */
  static create(boundMs = 2000): CgroupFreezer {
    const parent = ownCgroup()
    if (!parent || !fs.existsSync(path.join(parent, 'cgroup.procs'))) throw new Error('no cgroup v2 here (/sys/fs/cgroup is not a cgroup2 mount)')
    try {
      fs.accessSync(path.join(parent, 'cgroup.procs'), fs.constants.W_OK)
    } catch {
      throw new Error(`${parent} is not writable (as in an unprivileged Docker container, where /sys/fs/cgroup is read-only); use --freeze=sigstop`)
    }
    // Names of our own: two shmkeeps under one parent cgroup must not share them.
    const tag = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`
    const app = path.join(parent, `shmkeep-app-${tag}`)
    const supervisor = path.join(parent, `shmkeep-supervisor-${tag}`)
    try {
      for (const dir of [app, supervisor]) if (!fs.existsSync(dir)) fs.mkdirSync(dir)
      fs.writeFileSync(path.join(supervisor, 'cgroup.procs'), String(process.pid))
    } catch (e) {
      throw new Error(`cannot make the app's cgroup under ${parent}: ${(e as Error).message}; use --freeze=sigstop`)
    }
    if (!fs.existsSync(path.join(app, 'cgroup.freeze'))) throw new Error(`${app} has no cgroup.freeze (Linux < 5.2)`)
    return new CgroupFreezer(parent, app, supervisor, boundMs)
  }

  /** The file the app's process writes "0" to, between fork and exec, to join its cgroup. */
  get procsFile(): string {
    return path.join(this.app, 'cgroup.procs')
  }

  async freeze(): Promise<{ ok: true } | { ok: false; reason: string }> {
    fs.writeFileSync(path.join(this.app, 'cgroup.freeze'), '1')
    this.frozen = true
    const until = Date.now() + this.boundMs
    while (!/^frozen 1$/m.test(fs.readFileSync(path.join(this.app, 'cgroup.events'), 'utf8'))) {
      if (Date.now() >= until) {
        this.thaw()
        return { ok: false, reason: `the app's cgroup did not freeze within ${this.boundMs} ms` }
      }
      await sleep(1)
    }
    return { ok: true }
  }

  thaw(): void {
    if (!this.frozen) return
    this.frozen = false
    fs.writeFileSync(path.join(this.app, 'cgroup.freeze'), '0')
  }

  /** Move shmkeep back and remove the two cgroups (once the app is gone). */
  remove(): void {
    try {
      this.thaw()
      fs.writeFileSync(path.join(this.parent, 'cgroup.procs'), String(process.pid))
      fs.rmdirSync(this.supervisor)
      fs.rmdirSync(this.app)
    } catch {
      // a process still in it; the container's cgroup goes with the container
    }
  }
}
