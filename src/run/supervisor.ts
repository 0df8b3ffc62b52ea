/**
 * `shmkeep run`: the container's entrypoint. Restore, start the app, forward
 * signals, and at stop let the app finish, snapshot, and exit with the app's
 * status. Correct as PID 1 (handlers for every forwarded signal, orphans
 * reaped) and as the child of tini / `docker run --init` (a child subreaper).
 */
import { isatty } from 'node:tty'
import type { SegmentFilter } from '../filter'
import { formatKey } from '../keys'
import { countObjects, type SemFromCheckpoint } from '../kinds'
import { errorLine, humanDuration, humanSize, type Logger } from '../log'
import { lockHolders } from '../lock'
import { native } from '../native'
import { RUN_SNAPSHOT_EXIT } from '../outcome'
import { restore, RestoreError } from '../restore'
import * as shm from '../shm'
import { describeSnapshot, snapshot, SnapshotError } from '../snapshot'
import { StateDir } from '../state/statedir'
import { exitStatus, Reaper, startApp, StartError, type Ending } from './app'
import { attachersById } from './attachers'
import { Checkpointer } from './checkpointer'
import { cutOffStop, lastFinalSnapshotSeconds, stopDeadline, stopFinished, stopStarting, type Deadline } from './deadline'
import { CgroupFreezer, SigstopFreezer } from './freeze'
import { Hooks } from './hooks'
import { RunLineage } from './lineage'
import { Pins } from './pins'
import { emptyRunReport, type RunReport } from './report'
import { forwardableSignals, signalName, signalNumber } from './signals'
import { warnShellForm } from './shellform'
import { stopApp, type Stopped } from './stop'

/** shmkeep's own exit codes (the app's status passes through otherwise). */
export const RUN_EXIT = {
  usage: 2,
  /** The final snapshot failed (the app's status is in the log). */
  snapshotFailed: 124,
  /** The restore failed; the app was not started. */
  restoreFailed: 125,
  /** The command exists but cannot be run. */
  notExecutable: 126,
  /** The command was not found. */
  notFound: 127,
} as const

export interface RunOptions {
  /** The app and its arguments (no shell). */
  command: string[]
  stateDir: string
  /** Seconds between the orchestrator's TERM and its KILL (docker stop -t; Kubernetes terminationGracePeriodSeconds). */
  grace: number
  /** Seconds the app gets to stop (default: derived from grace, see src/run/deadline.ts). */
  stopTimeout?: number
  /** Send signals to the app's whole process group. */
  signalGroup?: boolean
  /** Forward FROM as TO. */
  rewrite?: Map<NodeJS.Signals, NodeJS.Signals>
  /** After a failed restore: exit without starting the app (default), or start it anyway. */
  onRestoreError?: 'exit' | 'start'
  /** With onRestoreError 'start': let the new state's snapshots move CURRENT. */
  acceptNewState?: boolean
  /** Let snapshots move CURRENT even when the lineage is unknown or another writer moved it. */
  force?: boolean
  /** Snapshot when the app exits on its own: always (default), only on status 0, never. */
  snapshotOnExit?: 'always' | 'success' | 'never'
  keep?: number
  filter?: SegmentFilter
  /** Seconds between periodic checkpoints (default: none). */
  checkpointInterval?: number
  /** Semaphore sets a checkpoint saved: restore or skip (src/kinds). */
  semFromCheckpoint?: SemFromCheckpoint
  /** How checkpoints keep the image consistent (default sigstop). */
  freeze?: 'sigstop' | 'cgroup' | 'none'
  /** How long processes may take to stop for a checkpoint, ms (default 2000). */
  freezeTimeoutMs?: number
  /** Shell commands run after the app started, on TERM before forwarding it, and after the final snapshot. */
  hooks?: { postStart?: string[]; preStop?: string[]; postStop?: string[] }
  /** Seconds each hook may run (default 5). */
  hookTimeout?: number
  /** Trust a state dir other users may write (default: SHMKEEP_INSECURE_STATE_DIR; src/state/trust.ts). */
  insecureStateDir?: boolean
  log: Logger
  env?: NodeJS.ProcessEnv
  /** Filled in as the run goes (`run --report-file`: src/run/report.ts). */
  report?: RunReport
}

const STOP_SIGNALS = new Set<NodeJS.Signals>(['SIGTERM', 'SIGINT'])

/**
 * The whole run, phase by phase: restore, the stop's arithmetic, start,
 * checkpoints while the app runs, the stop, the final snapshot, the exit
 * status. Each phase that can end the run returns its exit code.
 */
export async function runApp(o: RunOptions): Promise<number> {
  const run = new Supervisor(o)
  try {
    return await run.main()
  } finally {
    run.close()
  }
}

type Phase = 'starting' | 'running' | 'stopping' | 'saving'

/** How the app's run ended: a stop signal (and when it came), or the app on its own. */
interface Ended extends Stopped {
  reason: 'stop' | 'exit'
  /** When the orchestrator's stop signal came: its SIGKILL follows `grace` seconds later. */
  termAt?: number
}

class Supervisor {
  private readonly log: Logger
  private readonly report: RunReport
  private readonly isInit = process.pid === 1
  private readonly pins: Pins
  private readonly hooks: Hooks
  private readonly lineage: RunLineage
  private readonly listeners: Array<readonly [NodeJS.Signals, () => void]>
  private phase: Phase = 'starting'
  /** The app's pid once started. */
  private app: number | undefined
  /** A stop signal that came before the app started. */
  private stopBeforeStart: NodeJS.Signals | undefined
  /** A stop signal during the restore undoes it (the app is then not started). */
  private readonly restoreAbort = new AbortController()
  /** Resolves the wait for a stop signal while the app runs. */
  private onStop: ((sig: NodeJS.Signals) => void) | undefined

  constructor(private readonly o: RunOptions) {
    this.log = o.log
    this.report = o.report ?? emptyRunReport(o.command)
    this.pins = new Pins(o.log)
    this.hooks = new Hooks(
      { 'post-start': o.hooks?.postStart ?? [], 'pre-stop': o.hooks?.preStop ?? [], 'post-stop': o.hooks?.postStop ?? [] },
      o.hookTimeout ?? 5,
      o.log,
      o.env ?? process.env,
    )
    this.lineage = new RunLineage(o.force)
    // Signals first: anything that arrives before the app runs is remembered.
    this.listeners = forwardableSignals().map((sig) => {
      const listener = () => this.onSignal(sig)
      process.on(sig, listener)
      return [sig, listener] as const
    })
  }

  async main(): Promise<number> {
    const { o, log } = this
    warnShellForm(log)
    this.becomeSubreaper()

    // 1. Restore (or keep a warm namespace).
    const restored = await this.restore()
    if (typeof restored === 'number') return restored
    if (this.stopBeforeStart) {
      log.log('info', 'stop', `${this.stopBeforeStart} arrived before the app started: not starting it`)
      return 128 + signalNumber(this.stopBeforeStart)
    }

    // 2. The stop's arithmetic, and the cgroup a checkpoint freezes: both refused now, before the app runs.
    const deadline = this.deadline(restored.bytesPerSecond)
    if (typeof deadline === 'number') return deadline
    if (this.pins.scan()) log.log('info', 'pin', 'kernel.shm_rmid_forced is 1: shmkeep keeps one attachment on every segment until the final snapshot (attach counts are one higher)')
    let cgroup: CgroupFreezer | undefined
    if (o.checkpointInterval && o.freeze === 'cgroup') {
      try {
        cgroup = CgroupFreezer.create(o.freezeTimeoutMs)
      } catch (e) {
        log.log('error', 'freeze', `--freeze=cgroup cannot work here: ${(e as Error).message}`)
        return RUN_EXIT.usage
      }
    }

    // 3. Start the app, and reap from now on.
    const app = this.start(deadline, cgroup)
    if (app instanceof StartError) return app.status
    const reaper = new Reaper(app, () => this.hooks.pids, log, () => this.pins.scan())
    try {
      // 4. Checkpoints while it runs; wait for a stop signal or for the app to end on its own.
      const checkpoints = new Checkpointer({
        intervalSeconds: o.checkpointInterval,
        stateDir: o.stateDir,
        insecureStateDir: o.insecureStateDir,
        keep: o.keep,
        filter: o.filter,
        freezer: o.freeze === 'none' ? undefined : cgroup ?? SigstopFreezer.forContainer(this.isInit, app, () => this.hooks.pids, o.freezeTimeoutMs),
        lineage: this.lineage,
        counts: this.report.checkpoints,
        log,
      })
      checkpoints.schedule()
      const postStart = this.hooks.run('post-start')
      const stopSignal = new Promise<NodeJS.Signals>((resolve) => (this.onStop = resolve))
      const first = await Promise.race([reaper.ended.then((e) => ({ ended: e })), stopSignal.then((s) => ({ signal: s }))])
      this.phase = 'stopping'
      // A checkpoint never overlaps the final snapshot: the app resumes at
      // once and the checkpoint is abandoned; it lets go of the state dir
      // before the final snapshot starts, while the stop goes on now.
      const checkpointDone = checkpoints.cancel()

      // 5. The stop.
      const ended: Ended =
        'signal' in first
          ? { reason: 'stop', termAt: performance.now(), ...(await this.stop(first.signal, app, reaper, deadline)) }
          : { reason: 'exit', ending: first.ended, killed: false }
      await checkpointDone
      this.phase = 'saving'
      cgroup?.remove()
      const status = exitStatus(ended.ending)
      this.report.app = { pid: app, ended: ended.reason, status, ...('signal' in ended.ending ? { signal: signalName(ended.ending.signal) } : {}), killed: ended.killed }
      log.log('info', 'exit', `app exited with status ${status}${'signal' in ended.ending ? ` (${signalName(ended.ending.signal)})` : ''}`, { status })

      // 6. The final snapshot, then 7. the exit status.
      const code = await this.finalSnapshot(ended, status)
      reaper.close()
      await postStart
      await this.hooks.run('post-stop')
      return code
    } finally {
      reaper.close()
    }
  }

  close(): void {
    this.pins.release()
    for (const [sig, l] of this.listeners) process.removeListener(sig, l)
  }

  private onSignal(sig: NodeJS.Signals): void {
    if (!STOP_SIGNALS.has(sig)) return this.forward(sig)
    if (this.phase === 'starting') {
      this.stopBeforeStart ??= sig
      this.restoreAbort.abort(sig)
    } else if (this.phase === 'running') this.onStop?.(sig)
    else if (this.phase === 'stopping') this.forward(sig)
    else this.log.log('info', 'signal', `${sig} during the final snapshot: ignored, the snapshot goes on`)
  }

  private forward(sig: NodeJS.Signals): void {
    const { app, o } = this
    if (app === undefined) return
    const to = o.rewrite?.get(sig) ?? sig
    try {
      process.kill(o.signalGroup ? -app : app, to)
      this.log.log('info', 'signal', `forwarded ${sig}${to !== sig ? ` as ${to}` : ''} to the app${o.signalGroup ? "'s process group" : ''} (pid ${app})`, { signal: sig, to })
    } catch (e) {
      this.log.log('debug', 'signal', `could not forward ${sig}: ${(e as Error).message}`)
    }
  }

  private becomeSubreaper(): void {
    if (this.isInit) return
    try {
      native.setChildSubreaper()
    } catch (e) {
      this.log.log('warn', 'subreaper', `cannot become a child subreaper (${(e as Error).message}): orphans of the app will not be reaped by shmkeep`)
    }
  }

  /**
   * Restore, or keep a warm namespace. A state dir that is missing or cannot
   * be trusted, or a failed restore, ends the run (the app is not started)
   * unless --on-restore-error=start. Returns the restore's throughput (an
   * estimate of the final snapshot's speed without history), or the exit code.
   */
  private async restore(): Promise<{ bytesPerSecond?: number } | number> {
    const { o, log, report } = this
    try {
      StateDir.open(o.stateDir, { log, warn: true, insecure: o.insecureStateDir })
    } catch (e) {
      report.error = (e as Error).message
      log.log('error', 'restore.failed', `${(e as Error).message}. The app is not started.`)
      return RUN_EXIT.restoreFailed
    }
    try {
      const r = await restore({ stateDir: o.stateDir, filter: o.filter, semFromCheckpoint: o.semFromCheckpoint, insecureStateDir: o.insecureStateDir, signal: this.restoreAbort.signal, log })
      report.restore = r
      this.lineage.parent = r.parent
      if (r.warm && r.parent === undefined) {
        log.log('warn', 'restore.warm', 'this namespace holds saved keys but no lineage record: its snapshots are written beside CURRENT (run --force to let them replace it)')
      }
      if (!r.warm) {
        const done = r.segments.filter((s) => s.status === 'restored')
        const others = countObjects(r.objects, 'restored')
        log.log('info', 'restore', r.generation ? `restored ${done.length} segment(s)${others ? `, ${others}` : ''} from ${r.generation} (${humanSize(r.bytes)}, ${humanDuration(r.durationMs)})` : 'nothing to restore (empty state dir): a first start', {
          generation: r.generation,
          segments: done.length,
          bytes: r.bytes,
          ms: Math.round(r.durationMs),
        })
      }
      // Ids that could not be kept were logged by restore() itself (restore.ids).
      return r.bytes > 0 && r.durationMs > 0 ? { bytesPerSecond: r.bytes / (r.durationMs / 1000) } : {}
    } catch (e) {
      if (!(e instanceof RestoreError)) {
        // Not even begun (the state dir's lock cannot be taken, …): a failed restore all the same.
        report.error = errorLine(e)
        log.log('error', 'restore.failed', `${report.error}. The app is not started.`)
        return RUN_EXIT.restoreFailed
      }
      report.restore = { ...e.report, error: e.message }
      // Each rejected generation has had its own error line (restore.rejected): not again here.
      const why = e.report.rejected.length ? e.message.replace(/no generation verifies: [\s\S]*$/, `no generation verifies (${e.report.rejected.map((r) => r.generation).join(', ')}: see above)`) : e.message
      if (this.restoreAbort.signal.aborted) {
        log.log('error', 'restore.failed', `${why}. The app is not started.`)
        return RUN_EXIT.restoreFailed
      }
      if (o.onRestoreError !== 'start') {
        log.log('error', 'restore.failed', `${why}. The app is not started: starting it on empty state and snapshotting later would bury the saved state. See \`shmkeep verify\`; --on-restore-error=start starts it anyway.`)
        return RUN_EXIT.restoreFailed
      }
      this.lineage.startedAnyway(!!o.acceptNewState)
      log.log('error', 'restore.failed', `${why}. Starting the app anyway (--on-restore-error=start)${this.lineage.side ? '; its snapshots are written beside CURRENT and never replace it (--accept-new-state to let them)' : '; its first snapshot replaces CURRENT (--accept-new-state)'}`)
      return {}
    }
  }

  /**
   * The stop timeout. The snapshot reserve comes from the final snapshots
   * recorded; without any, it is estimated from what there is to save and
   * the throughput this restore had. Returns the exit code when it refuses.
   */
  private deadline(bytesPerSecond: number | undefined): Deadline | number {
    const { o, log } = this
    const liveBytes = shm.list().reduce((n, s) => n + (s.dest ? 0 : s.size), 0)
    const deadline = stopDeadline(
      o.grace,
      {
        lastSeconds: lastFinalSnapshotSeconds(o.stateDir),
        ...(bytesPerSecond ? { estimate: { bytes: liveBytes, bytesPerSecond, from: 'by this restore' } } : {}),
        cutOff: cutOffStop(o.stateDir),
      },
      this.hooks.stopHooks,
      o.stopTimeout,
    )
    if (deadline.refuse) {
      log.log('error', 'deadline', deadline.refuse)
      return RUN_EXIT.usage
    }
    log.log('info', 'deadline', deadline.explain, { stopTimeout: deadline.stopTimeout, grace: o.grace })
    if (deadline.warning) log.log('warn', 'deadline', deadline.warning)
    return deadline
  }

  /** Start the app: its pid, or why it could not be started (126/127). */
  private start(deadline: Deadline, cgroup: CgroupFreezer | undefined): number | StartError {
    const { o, log } = this
    try {
      // tty.isatty, not process.stdin.isTTY: the latter opens stdin as a stream.
      // SHMKEEP_RUN tells a Node app using the library that `run` takes the
      // final snapshot (one snapshot, not two); SHMKEEP_STOP_TIMEOUT how long
      // it has to stop once the signal is forwarded.
      // The line is written before the app may run: the log and the app's
      // output (on one terminal or file) come in the order things happen.
      this.app = startApp(
        o.command,
        { ...(o.env ?? process.env), SHMKEEP_RUN: String(process.pid), SHMKEEP_STOP_TIMEOUT: String(deadline.stopTimeout) },
        isatty(0),
        cgroup?.procsFile,
        (pid) => log.log('info', 'start', `app started: ${o.command.join(' ')} (pid ${pid})`, { pid }),
      )
    } catch (e) {
      if (!(e instanceof StartError)) throw e
      this.report.error = e.message
      log.log('error', 'start', e.message)
      return e
    }
    this.phase = 'running'
    this.report.app = { pid: this.app }
    return this.app
  }

  private stop(signal: NodeJS.Signals, app: number, reaper: Reaper, deadline: Deadline): Promise<Stopped> {
    return stopApp({
      app,
      reaper,
      hooks: this.hooks,
      stopTimeout: deadline.stopTimeout,
      isInit: this.isInit,
      signalGroup: this.o.signalGroup,
      forward: () => this.forward(signal),
      beforeSignal: () => this.pins.scan(),
      log: this.log,
    })
  }

  /**
   * The final snapshot (unless --snapshot-on-exit says no), and the exit
   * status: the app's when its state was kept, else run's code for what the
   * snapshot's outcome was.
   */
  private async finalSnapshot(ended: Ended, status: number): Promise<number> {
    const { o, log, report } = this
    const policy = o.snapshotOnExit ?? 'always'
    if (!(ended.reason === 'stop' || policy === 'always' || (policy === 'success' && status === 0))) {
      log.log('info', 'snapshot.skipped', `no snapshot: --snapshot-on-exit=${policy} and the app exited with status ${status}`)
      return status
    }
    const own = this.pins.ids
    const attachers = this.attachers(own)
    for (const a of attachers) log.log('warn', 'snapshot.inconsistent', `segment ${a.key} is still attached by pid ${a.pid} (${a.command}): the generation is marked live (may be torn)`, a)
    // At a stop, the orchestrator's SIGKILL comes `grace` seconds after its
    // TERM: the lock wait is bounded by what is left, and the attempt is
    // recorded so that one cut off makes the next reserve grow.
    const secondsLeft = ended.termAt === undefined ? undefined : Math.max(0, o.grace - (performance.now() - ended.termAt) / 1000)
    let stopRecord: StateDir | undefined
    try {
      stopRecord = StateDir.open(o.stateDir, { insecure: o.insecureStateDir })
      if (secondsLeft !== undefined) {
        stopStarting(stopRecord, secondsLeft)
        log.log('info', 'deadline', `final snapshot: ${secondsLeft.toFixed(1)} s left before SIGKILL`, { secondsLeft })
      }
    } catch (e) {
      log.log('debug', 'deadline', `could not record the final snapshot's start: ${(e as Error).message}`)
    }
    try {
      const r = await snapshot({
        stateDir: o.stateDir,
        insecureStateDir: o.insecureStateDir,
        ...(secondsLeft !== undefined ? { lockTimeoutMs: Math.floor(secondsLeft * 1000) } : {}),
        reason: ended.reason,
        clean: ended.reason === 'stop' && !ended.killed && attachers.length === 0,
        ...this.lineage.options(),
        keep: o.keep,
        filter: o.filter,
        attachers,
        pinnedIds: own,
        log,
      })
      this.lineage.followed(r)
      report.snapshot = r
      const d = describeSnapshot(r)
      log.log('info', 'snapshot', d.message, d.fields)
      const code = RUN_SNAPSHOT_EXIT[r.outcome]
      if (code !== 'app') {
        // A side generation's one error line (why, and the command to adopt
        // it) was logged by the snapshot itself.
        log.log(r.outcome === 'side' ? 'warn' : 'error', 'snapshot.incomplete', `the app's state was not fully kept (${r.outcome}): exit ${code} (the app exited with status ${status})`, { outcome: r.outcome, status })
        return code
      }
      if (d.saved === 0) log.log('warn', 'snapshot.empty', 'no segment to save: an app that removes its segments (IPC_RMID) at exit leaves nothing for shmkeep (see docs/OPERATIONS.md)')
      if (r.durationMs / 1000 > o.grace / 2) log.log('warn', 'deadline', `this snapshot took ${(r.durationMs / 1000).toFixed(1)} s, more than half of the ${o.grace} s grace period: the next stop may be cut off by SIGKILL`)
      return status
    } catch (e) {
      // Whatever went wrong, the final snapshot failed: its own exit code, never silent.
      let message = e instanceof Error ? e.message : String(e)
      if (/EWOULDBLOCK/.test(message)) {
        const holders = lockHolders(StateDir.open(o.stateDir, { insecure: o.insecureStateDir }).path('LOCK'))
        message = `the state dir's lock was not free within the ${secondsLeft?.toFixed(1)} s left before SIGKILL; held by ${holders.length ? holders.join(', ') : 'no process visible here (one in another PID namespace shows as pid 0, one on another machine over NFS not at all)'}`
      }
      log.log('error', 'snapshot.failed', `${message} (the app exited with status ${status})`)
      if (e instanceof SnapshotError) {
        this.lineage.followed(e.report)
        report.snapshot = { ...e.report, error: message }
      } else {
        report.error = message
      }
      const code = e instanceof SnapshotError ? RUN_SNAPSHOT_EXIT[e.report.outcome] : RUN_EXIT.snapshotFailed
      return code === 'app' ? RUN_EXIT.snapshotFailed : code
    } finally {
      // Finished (saved or failed, not cut off): the next reserve needs no extra.
      if (stopRecord) stopFinished(stopRecord)
    }
  }

  /** Processes other than shmkeep (and its pins) still attached to a segment: the snapshot is then `live`. */
  private attachers(own: ReadonlySet<number>): Array<{ key: string; pid: number; command: string }> {
    const attached = attachersById(new Set([process.pid]))
    const out: Array<{ key: string; pid: number; command: string }> = []
    for (const s of shm.list()) {
      if (s.dest || s.nattch <= (own.has(s.id) ? 1 : 0)) continue
      for (const a of attached.get(s.id) ?? [{ pid: 0, command: 'unknown (not visible in this PID namespace)' }]) out.push({ key: formatKey(s.key), ...a })
    }
    return out
  }
}
