/**
 * `shmkeep run`: the container's entrypoint. Restore, start the app, forward
 * signals, and at stop let the app finish, snapshot, and exit with the app's
 * status. Correct as PID 1 (handlers for every forwarded signal, orphans
 * reaped) and as the child of tini / `docker run --init` (a child subreaper).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { isatty } from 'node:tty'
import type { SegmentFilter } from '../filter'
import { formatKey } from '../keys'
import { countObjects, liveSavedObjects, type SemFromCheckpoint } from '../kinds'
import { humanDuration, humanSize, type Logger } from '../log'
import { native } from '../native'
import { restore, RestoreError } from '../restore'
import * as shm from '../shm'
import { describeSnapshot, snapshot, SnapshotError } from '../snapshot'
import { RUN_SNAPSHOT_EXIT } from '../outcome'
import { lockHolders } from '../lock'
import { StateDir } from '../state/statedir'
import { childPids, describeProcess, exitStatus, otherProcesses, reap, startApp, StartError, type Ending } from './app'
import { attachersById } from './attachers'
import { cutOffStop, lastFinalSnapshotSeconds, stopDeadline, stopFinished, stopStarting } from './deadline'
import { CgroupFreezer, SigstopFreezer, type Freezer } from './freeze'
import { Hooks } from './hooks'
import { Pins } from './pins'
import { forwardableSignals, signalName, signalNumber } from './signals'
import { warnShellForm } from './shellform'
import { emptyRunReport, type RunReport } from './report'

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

export async function runApp(o: RunOptions): Promise<number> {
  const { log } = o
  const report = o.report ?? emptyRunReport(o.command)
  const isInit = process.pid === 1
  const pins = new Pins(log)
  const hooks = new Hooks(
    { 'post-start': o.hooks?.postStart ?? [], 'pre-stop': o.hooks?.preStop ?? [], 'post-stop': o.hooks?.postStop ?? [] },
    o.hookTimeout ?? 5,
    log,
    o.env ?? process.env,
  )

  // Signals first: anything that arrives before the app runs is remembered.
  let app: number | undefined
  let phase: 'starting' | 'running' | 'stopping' | 'saving' = 'starting'
  let stopRequest: NodeJS.Signals | undefined
  let onStop: ((sig: NodeJS.Signals) => void) | undefined
  // A stop signal during the restore undoes it (the app is then not started).
  const restoreAbort = new AbortController()
  const forward = (sig: NodeJS.Signals) => {
    if (app === undefined) return
    const to = o.rewrite?.get(sig) ?? sig
    try {
      process.kill(o.signalGroup ? -app : app, to)
      log.log('info', 'signal', `forwarded ${sig}${to !== sig ? ` as ${to}` : ''} to the app${o.signalGroup ? "'s process group" : ''} (pid ${app})`, { signal: sig, to })
    } catch (e) {
      log.log('debug', 'signal', `could not forward ${sig}: ${(e as Error).message}`)
    }
  }
  const listeners = forwardableSignals().map((sig) => {
    const listener = () => {
      if (STOP_SIGNALS.has(sig)) {
        if (phase === 'starting') {
          stopRequest ??= sig
          restoreAbort.abort(sig)
        }
        else if (phase === 'running') onStop?.(sig)
        else if (phase === 'stopping') forward(sig)
        else log.log('info', 'signal', `${sig} during the final snapshot: ignored, the snapshot goes on`)
        return
      }
      forward(sig)
    }
    process.on(sig, listener)
    return [sig, listener] as const
  })

  try {
    warnShellForm(log)
    if (!isInit) {
      try {
        native.setChildSubreaper()
      } catch (e) {
        log.log('warn', 'subreaper', `cannot become a child subreaper (${(e as Error).message}): orphans of the app will not be reaped by shmkeep`)
      }
    }

    // 1. Restore (or keep a warm namespace). A state dir that is missing or
    // cannot be trusted is a failed restore: the app is not started.
    try {
      StateDir.open(o.stateDir, { log, warn: true, insecure: o.insecureStateDir })
    } catch (e) {
      report.error = (e as Error).message
      log.log('error', 'restore.failed', `${(e as Error).message}. The app is not started.`)
      return RUN_EXIT.restoreFailed
    }
    // Lineage: which generation the live state descends from. run knows it
    // from its own restore and keeps it for its whole life, whatever the app
    // does to its objects; undefined: unknown (its snapshots go beside CURRENT).
    let parent: string | null | undefined
    let side = false
    // --accept-new-state: the first snapshot of the new state switches CURRENT.
    let forceNext = false
    /** Bytes per second the restore ran at (an estimate of the final snapshot's speed without history). */
    let measured: number | undefined
    try {
      const r = await restore({ stateDir: o.stateDir, filter: o.filter, semFromCheckpoint: o.semFromCheckpoint, insecureStateDir: o.insecureStateDir, signal: restoreAbort.signal, log })
      report.restore = r
      parent = r.parent
      if (r.bytes > 0 && r.durationMs > 0) measured = r.bytes / (r.durationMs / 1000)
      if (r.warm && parent === undefined) {
        log.log('warn', 'restore.warm', 'this namespace holds saved keys but no lineage record: its snapshots are written beside CURRENT (run --force to let them replace it)')
      }
      const done = r.segments.filter((s) => s.status === 'restored')
      const others = countObjects(r.objects, 'restored')
      if (!r.warm) {
        log.log('info', 'restore', r.generation ? `restored ${done.length} segment(s)${others ? `, ${others}` : ''} from ${r.generation} (${humanSize(r.bytes)}, ${humanDuration(r.durationMs)})` : 'nothing to restore (empty state dir): a first start', {
          generation: r.generation,
          segments: done.length,
          bytes: r.bytes,
          ms: Math.round(r.durationMs),
        })
      }
      const moved = done.filter((s) => !s.idKept)
      if (r.idsNotKept && moved.length) {
        log.log('warn', 'restore.ids', `segment ids could not be kept (${r.idsNotKept}): ${moved.map((s) => `${s.key} was id ${s.savedId}, now ${s.id}`).join('; ')}. Keys, sizes, modes and owners are back; an app that stored ids must look them up by key.`)
      }
    } catch (e) {
      if (!(e instanceof RestoreError)) throw e
      report.restore = { ...e.report, error: e.message }
      if (restoreAbort.signal.aborted) {
        log.log('error', 'restore.failed', `${e.message}. The app is not started.`)
        return RUN_EXIT.restoreFailed
      }
      if (o.onRestoreError !== 'start') {
        log.log('error', 'restore.failed', `${e.message}. The app is not started: starting it on empty state and snapshotting later would bury the saved state. See \`shmkeep verify\`; --on-restore-error=start starts it anyway.`)
        return RUN_EXIT.restoreFailed
      }
      side = !o.acceptNewState
      forceNext = !!o.acceptNewState
      log.log('error', 'restore.failed', `${e.message}. Starting the app anyway (--on-restore-error=start)${side ? '; its snapshots are written beside CURRENT and never replace it (--accept-new-state to let them)' : '; its first snapshot replaces CURRENT (--accept-new-state)'}`)
    }
    /** Options every snapshot of this run shares: the lineage, and whether CURRENT may move. */
    const lineageOptions = () => ({ side, force: o.force || forceNext, ...(parent !== undefined ? { parent } : {}) })
    /** After a snapshot: CURRENT moved to it, so it is the parent of the next. */
    const followed = (r: { current: boolean; generation: string | null }) => {
      if (!r.current) return
      parent = r.generation
      forceNext = false
    }
    if (stopRequest) {
      log.log('info', 'stop', `${stopRequest} arrived before the app started: not starting it`)
      return 128 + signalNumber(stopRequest)
    }
    // The snapshot reserve: from the final snapshots recorded; without any,
    // estimated from what there is to save and the throughput this restore had.
    const lastSeconds = lastFinalSnapshotSeconds(o.stateDir)
    const liveBytes = shm.list().reduce((n, s) => n + (s.dest ? 0 : s.size), 0)
    const deadline = stopDeadline(
      o.grace,
      {
        lastSeconds,
        ...(measured ? { estimate: { bytes: liveBytes, bytesPerSecond: measured, from: 'by this restore' } } : {}),
        cutOff: cutOffStop(o.stateDir),
      },
      hooks.stopHooks,
      o.stopTimeout,
    )
    if (deadline.refuse) {
      log.log('error', 'deadline', deadline.refuse)
      return RUN_EXIT.usage
    }
    log.log('info', 'deadline', deadline.explain, { stopTimeout: deadline.stopTimeout, grace: o.grace })
    if (deadline.warning) log.log('warn', 'deadline', deadline.warning)
    if (pins.scan()) log.log('info', 'pin', 'kernel.shm_rmid_forced is 1: shmkeep keeps one attachment on every segment until the final snapshot (attach counts are one higher)')

    // The cgroup freezer is refused at start when it cannot work here.
    let cgroup: CgroupFreezer | undefined
    if (o.checkpointInterval && o.freeze === 'cgroup') {
      try {
        cgroup = CgroupFreezer.create(o.freezeTimeoutMs)
      } catch (e) {
        log.log('error', 'freeze', `--freeze=cgroup cannot work here: ${(e as Error).message}`)
        return RUN_EXIT.usage
      }
    }

    // 2. Start the app.
    try {
      // tty.isatty, not process.stdin.isTTY: the latter opens stdin as a stream.
      // SHMKEEP_RUN tells a Node app using the library that `run` takes the
      // final snapshot (one snapshot, not two); SHMKEEP_STOP_TIMEOUT how long
      // it has to stop once the signal is forwarded.
      app = startApp(
        o.command,
        { ...(o.env ?? process.env), SHMKEEP_RUN: String(process.pid), SHMKEEP_STOP_TIMEOUT: String(deadline.stopTimeout) },
        isatty(0),
        cgroup?.procsFile,
      )
    } catch (e) {
      if (!(e instanceof StartError)) throw e
      report.error = e.message
      log.log('error', 'start', e.message)
      return e.status
    }
    phase = 'running'
    report.app = { pid: app }
    log.log('info', 'start', `app started: ${o.command.join(' ')} (pid ${app})`, { pid: app })

    // 3. Reap: the app (its status is ours) and orphans that come to us.
    const appPid = app
    let ended: (e: Ending) => void
    const appEnded = new Promise<Ending>((resolve) => (ended = resolve))
    let appEnding: Ending | undefined
    const reapAll = () => {
      if (!appEnding) {
        const e = reap(appPid)
        if (e) {
          appEnding = e
          ended(e)
        }
      }
      for (const pid of childPids()) {
        // Hooks are libuv's children: reaping them here would steal their status.
        if (pid === appPid || hooks.pids.has(pid)) continue
        const e = reap(pid)
        if (e) log.log('debug', 'reap', `reaped orphan ${pid} (status ${exitStatus(e)})`)
      }
    }
    process.on('SIGCHLD', reapAll)
    const poll = setInterval(() => {
      reapAll()
      pins.scan()
    }, 1000)
    reapAll()

    // Periodic checkpoints, never overlapping each other or the final snapshot.
    let checkpoint: { abort: AbortController; freezer?: Freezer; done: Promise<void> } | undefined
    let checkpointTimer: NodeJS.Timeout | undefined
    let lastCheckpointFailed = false
    const freezer: Freezer | undefined =
      o.freeze === 'none' ? undefined : cgroup ?? SigstopFreezer.forContainer(isInit, appPid, () => hooks.pids, o.freezeTimeoutMs)
    const scheduleCheckpoint = () => {
      if (!o.checkpointInterval || phase !== 'running') return
      checkpointTimer = setTimeout(() => {
        const abort = new AbortController()
        checkpoint = { abort, freezer, done: takeCheckpoint(abort) }
      }, o.checkpointInterval * 1000)
    }
    const takeCheckpoint = async (abort: AbortController): Promise<void> => {
      let started = performance.now()
      let pauseMs = 0
      try {
        const r = await snapshot({
          stateDir: o.stateDir,
          insecureStateDir: o.insecureStateDir,
          reason: 'checkpoint',
          // Another writer holds the state dir (an operator's `shmkeep snapshot`):
          // skip this checkpoint rather than wait, the next one comes soon.
          lockTimeoutMs: 0,
          freeze: freezer
            ? () => {
                started = performance.now()
                return freezer.freeze()
              }
            : undefined,
          // After a failed checkpoint (e.g. a damaged previous generation), write the next in full.
          incremental: !lastCheckpointFailed,
          ...lineageOptions(),
          keep: o.keep,
          filter: o.filter,
          log,
          signal: abort.signal,
          afterCopy: freezer
            ? () => {
                freezer.thaw()
                pauseMs = performance.now() - started
              }
            : undefined,
        })
        followed(r)
        log.log(
          'info',
          'checkpoint',
          `checkpoint ${r.generation}: ${r.segments.filter((x) => x.status === 'saved').length} segment(s), ${humanSize(r.bytes)} in ${humanDuration(r.durationMs)}; ${freezer ? `app paused ${humanDuration(pauseMs)}` : 'app not paused (--freeze=none: not an image of one instant)'}`,
          { generation: r.generation, bytes: r.bytes, ms: Math.round(r.durationMs), pauseMs: Math.round(pauseMs) },
        )
        lastCheckpointFailed = false
        report.checkpoints.taken++
      } catch (e) {
        const message = (e as Error).message
        // CURRENT switched although durability is unknown: the lineage follows it.
        if (e instanceof SnapshotError) followed(e.report)
        if (abort.signal.aborted) {
          log.log('info', 'checkpoint.failed', 'checkpoint abandoned: the container is stopping')
        } else if (/EWOULDBLOCK|checkpoint skipped/.test(message)) {
          report.checkpoints.skipped++
          log.log('warn', 'checkpoint.skipped', message.includes('EWOULDBLOCK') ? 'checkpoint skipped: another writer holds the state dir' : message.replace(/^.*?checkpoint skipped/, 'checkpoint skipped'))
        } else {
          lastCheckpointFailed = true
          report.checkpoints.failed++
          log.log('error', 'checkpoint.failed', `checkpoint failed: ${message}`)
        }
      } finally {
        freezer?.thaw()
        checkpoint = undefined
        scheduleCheckpoint()
      }
    }
    scheduleCheckpoint()
    const postStart = hooks.run('post-start')

    // 4. Wait for a stop signal or for the app to end on its own.
    const stopSignal = new Promise<NodeJS.Signals>((resolve) => (onStop = resolve))
    const first = await Promise.race([appEnded.then((e) => ({ ended: e })), stopSignal.then((s) => ({ signal: s }))])
    phase = 'stopping'
    let ending: Ending
    let killed = false
    let reason: 'stop' | 'exit'
    /** When the orchestrator's stop signal came: its SIGKILL follows `grace` seconds later. */
    let termAt: number | undefined
    clearTimeout(checkpointTimer)
    // A checkpoint never overlaps the final snapshot: resume the app at once
    // and abandon the checkpoint; it lets go of the state dir before the
    // final snapshot starts (awaited there), while the stop goes on now.
    let checkpointDone: Promise<void> = Promise.resolve()
    if (checkpoint) {
      const c = checkpoint
      c.freezer?.thaw()
      c.abort.abort()
      checkpointDone = c.done
    }
    if ('signal' in first) {
      phase = 'stopping'
      reason = 'stop'
      termAt = performance.now()
      await hooks.run('pre-stop')
      // The stop timeout is the app's own share of the grace period (the
      // hooks' budgets were taken out of it): it starts now.
      const stopStarted = performance.now()
      pins.scan()
      forward(first.signal)
      // As PID 1, the whole container stops before the snapshot. The app goes
      // first and stops its own children its own way (a supervisor has its
      // stop signals and order); whatever is still running once it exited
      // (workers outside its group, setsid daemons) gets TERM then.
      const others = () => (isInit ? otherProcesses(new Set([appPid]), hooks.pids) : [])
      const allGone = (async () => {
        const e = await appEnded
        const left = others()
        if (left.length) log.log('info', 'stop', `the app exited; TERM to the processes still running: ${left.map(describeProcess).join(', ')}`)
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGTERM')
          } catch {
            // gone
          }
        }
        while (others().length) await sleep(20)
        return e
      })()
      const left = Math.max(0, deadline.stopTimeout * 1000 - (performance.now() - stopStarted))
      const r = await Promise.race([allGone, sleep(left, 'timeout' as const)])
      if (r === 'timeout') {
        killed = true
        const running = [...(appEnding ? [] : [appPid]), ...others()]
        log.log('warn', 'stop', `still running after ${deadline.stopTimeout.toFixed(1)} s, killed with SIGKILL: ${running.map(describeProcess).join(', ')}`)
        try {
          process.kill(o.signalGroup ? -appPid : appPid, 'SIGKILL')
        } catch {
          // ended meanwhile
        }
        for (const pid of others()) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // gone
          }
        }
        ending = await appEnded
        for (let i = 0; i < 100 && others().length; i++) await sleep(10)
      } else {
        ending = r
      }
    } else {
      reason = 'exit'
      ending = first.ended
    }
    await checkpointDone
    phase = 'saving'
    cgroup?.remove()
    const status = exitStatus(ending)
    report.app = { pid: appPid, ended: reason, status, ...('signal' in ending ? { signal: signalName(ending.signal) } : {}), killed }
    log.log('info', 'exit', `app exited with status ${status}${'signal' in ending ? ` (${signalName(ending.signal)})` : ''}`, { status })

    // 5. Final snapshot.
    const policy = o.snapshotOnExit ?? 'always'
    const take = reason === 'stop' || policy === 'always' || (policy === 'success' && status === 0)
    if (take) {
      const own = pins.ids
      const attached = attachersById(new Set([process.pid]))
      const attachers: Array<{ key: string; pid: number; command: string }> = []
      for (const s of shm.list()) {
        if (s.dest || s.nattch <= (own.has(s.id) ? 1 : 0)) continue
        for (const a of attached.get(s.id) ?? [{ pid: 0, command: 'unknown (not visible in this PID namespace)' }]) attachers.push({ key: formatKey(s.key), ...a })
      }
      for (const a of attachers) log.log('warn', 'snapshot.inconsistent', `segment ${a.key} is still attached by pid ${a.pid} (${a.command}): the generation is marked live (may be torn)`, a)
      // At a stop, the orchestrator's SIGKILL comes `grace` seconds after its
      // TERM: the lock wait is bounded by what is left, and the attempt is
      // recorded so that one cut off makes the next reserve grow.
      const secondsLeft = termAt === undefined ? undefined : Math.max(0, o.grace - (performance.now() - termAt) / 1000)
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
          reason,
          clean: reason === 'stop' && !killed && attachers.length === 0,
          ...lineageOptions(),
          keep: o.keep,
          filter: o.filter,
          attachers,
          pinnedIds: own,
          log,
        })
        followed(r)
        report.snapshot = r
        const d = describeSnapshot(r)
        log.log('info', 'snapshot', d.message, d.fields)
        const code = RUN_SNAPSHOT_EXIT[r.outcome]
        if (code !== 'app') {
          // A side generation's one error line (why, and the command to adopt
          // it) was logged by the snapshot itself.
          log.log(r.outcome === 'side' ? 'warn' : 'error', 'snapshot.incomplete', `the app's state was not fully kept (${r.outcome}): exit ${code} (the app exited with status ${status})`, { outcome: r.outcome, status })
          await hooks.run('post-stop')
          return code
        }
        if (d.saved === 0) log.log('warn', 'snapshot.empty', 'no segment to save: an app that removes its segments (IPC_RMID) at exit leaves nothing for shmkeep (see docs/OPERATIONS.md)')
        if (r.durationMs / 1000 > o.grace / 2) log.log('warn', 'deadline', `this snapshot took ${(r.durationMs / 1000).toFixed(1)} s, more than half of the ${o.grace} s grace period: the next stop may be cut off by SIGKILL`)
      } catch (e) {
        // Whatever went wrong, the final snapshot failed: its own exit code, never silent.
        let message = e instanceof Error ? e.message : String(e)
        if (/EWOULDBLOCK/.test(message)) {
          const holders = lockHolders(StateDir.open(o.stateDir, { insecure: o.insecureStateDir }).path('LOCK'))
          message = `the state dir's lock was not free within the ${secondsLeft?.toFixed(1)} s left before SIGKILL; held by ${holders.length ? holders.join(', ') : 'no process visible here (one in another PID namespace shows as pid 0, one on another machine over NFS not at all)'}`
        }
        log.log('error', 'snapshot.failed', `${message} (the app exited with status ${status})`)
        if (e instanceof SnapshotError) report.snapshot = { ...e.report, error: message }
        else report.error = message
        await hooks.run('post-stop')
        if (e instanceof SnapshotError) followed(e.report)
        const code = e instanceof SnapshotError ? RUN_SNAPSHOT_EXIT[e.report.outcome] : RUN_EXIT.snapshotFailed
        return code === 'app' ? RUN_EXIT.snapshotFailed : code
      } finally {
        // Finished (saved or failed, not cut off): the next reserve needs no extra.
        if (stopRecord) stopFinished(stopRecord)
        clearInterval(poll)
        process.removeListener('SIGCHLD', reapAll)
      }
    } else {
      clearInterval(poll)
      process.removeListener('SIGCHLD', reapAll)
      log.log('info', 'snapshot.skipped', `no snapshot: --snapshot-on-exit=${policy} and the app exited with status ${status}`)
    }
    await postStart
    await hooks.run('post-stop')
    return status
  } finally {
    pins.release()
    for (const [sig, l] of listeners) process.removeListener(sig, l)
  }
}
