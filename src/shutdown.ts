/**
 * Ordered shutdown for a Node app that uses shmkeep as a library. On TERM or
 * INT: the app's steps in the order they were registered (stop accepting,
 * drain, deregister, flush…), each under its own timeout, then the snapshot
 * of the app's segments, all inside the orchestrator's grace period; then exit.
 *
 *   grace (counted from the signal) = steps' budget + snapshot reserve
 *   snapshot reserve = max(2 s, 2 × the last final snapshot recorded in the state dir)
 *
 * A step that throws or times out is logged and the next one runs. A step
 * that times out has its AbortSignal aborted: a promise cannot be cancelled,
 * and a step left running could keep writing while the snapshot copies. No
 * step can eat into the snapshot's reserve.
 *
 * Under `shmkeep run` (SHMKEEP_RUN in the environment) the steps run, but the
 * snapshot is left to `run`, which takes it once the app has exited: one
 * snapshot, not two.
 */
import os from 'node:os'
import { segmentPredicate, type SegmentFilter } from './filter'
import type { KeyLike } from './keys'
import { streamLogger, type Logger } from './log'
import { OptionTypeError } from './errors'
import { checkBool, checkEntryOptions } from './options'
import { describeSnapshot, snapshot, SnapshotError, type SnapshotReport } from './snapshot'
import { lastFinalSnapshotSeconds } from './run/deadline'

/** The exit status of a shutdown (process.exit after a signal; `exitCode` in the report). */
export const SHUTDOWN_EXIT = {
  /** Every step ok, and the snapshot saved (or left to `shmkeep run`). */
  ok: 0,
  /** The snapshot failed: no generation written, CURRENT unchanged. */
  snapshotFailed: 1,
  /** The snapshot is saved (or left to `shmkeep run`), but some step failed, timed out or was skipped. */
  stepsFailed: 3,
} as const

export interface ShutdownOptions {
  /** The state directory the snapshot goes to. */
  stateDir: string
  /**
   * Seconds between the orchestrator's TERM and its KILL (docker stop -t,
   * Kubernetes terminationGracePeriodSeconds). Default 10, like
   * `shmkeep run --grace`. Under `shmkeep run`, give the same value as its --grace.
   */
  grace?: number
  /** Snapshot only these keys ("0x162e", "0x1000-0x1fff", 5678). Shorthand for `filter.keys`. */
  keys?: KeyLike | KeyLike[]
  /** Which segments to snapshot (default: all of this IPC namespace). */
  filter?: SegmentFilter
  /** Seconds kept for the snapshot (default: max(2, 2 × the last final snapshot recorded in the state dir)). */
  snapshotReserve?: number
  /** Generations to keep (default 2); 0 keeps all. */
  keep?: number
  /** Where the shutdown is logged (default: `streamLogger()`, text lines on stderr). */
  log?: Logger
  /** After a signal-triggered shutdown, `process.exit(report.exitCode)` (default true). */
  exit?: boolean
  /** Signals that start the shutdown (default SIGTERM and SIGINT; [] for none). */
  signals?: NodeJS.Signals[]
}

export interface StepOptions {
  /** Seconds this step may take (default: whatever is left of the steps' budget). */
  timeout?: number
}

/**
 * One shutdown step. `signal` aborts when the step runs out of time (its own
 * timeout or the steps' budget): stop what it is doing, and stop writing.
 */
export type ShutdownStep = (signal: AbortSignal) => unknown

export type StepStatus = 'ok' | 'failed' | 'timed-out' | 'skipped'

export interface StepReport {
  name: string
  status: StepStatus
  /** How long it ran (0 when skipped). */
  ms: number
  /** The time it was given, ms: its timeout, or less when the steps' budget ran short. */
  limitMs?: number
  /** Why it failed, timed out or was skipped. */
  error?: string
}

export type ShutdownSnapshot =
  | { status: 'saved'; report: SnapshotReport }
  | { status: 'skipped'; reason: string }
  | { status: 'failed'; error: string; report?: SnapshotReport }

export interface ShutdownDeadline {
  /** Seconds from the start of the shutdown to the orchestrator's KILL. */
  grace: number
  /** Seconds kept for the snapshot. */
  snapshotReserve: number
  /** Seconds the steps share: grace − snapshotReserve. */
  steps: number
  /** The last final snapshot recorded in the state dir, seconds (undefined: none yet). */
  lastSnapshotSeconds?: number
  /** The arithmetic, as logged. */
  explain: string
}

export interface ShutdownReport {
  /** What started it: the signal's name, or what was passed to run(). */
  trigger: string
  deadline: ShutdownDeadline
  steps: StepReport[]
  snapshot: ShutdownSnapshot
  exitCode: (typeof SHUTDOWN_EXIT)[keyof typeof SHUTDOWN_EXIT]
  durationMs: number
}

export interface Shutdown {
  /** Add a step (run in the order added). Throws once the shutdown has started. */
  step(name: string, fn: ShutdownStep, options?: StepOptions): Shutdown
  /**
   * Shut down now (what a signal does, without the exit). Runs once: later
   * calls, and signals, get the same report.
   */
  run(trigger?: string): Promise<ShutdownReport>
  /** Remove the signal listeners (a shutdown in progress goes on). */
  dispose(): void
}

/** Reasons of the snapshots taken at a stop: by `shmkeep run`, or by this module. */
const FINAL_REASONS: ReadonlySet<string> = new Set(['stop', 'library'])
const RUN_REASONS: ReadonlySet<string> = new Set(['stop'])

/** setTimeout's largest delay; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1
const DEFAULT_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']
const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP'])

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

const s1 = (seconds: number) => `${seconds.toFixed(1)} s`

/**
 * Ordered shutdown steps, then the snapshot, inside the grace period. Listens
 * for SIGTERM and SIGINT from now on (see `signals`); a second signal during
 * the shutdown does not restart it.
 *
 * ```ts
 * const shutdown = createShutdown({ stateDir: '/var/lib/shmkeep', grace: 30, keys: ['0x162e'] })
 * shutdown.step('stop accepting', () => server.close(), { timeout: 1 })
 * shutdown.step('drain', (signal) => drained(signal), { timeout: 15 })
 * ```
 */
export function createShutdown(options: ShutdownOptions): Shutdown {
  checkEntryOptions('createShutdown', options)
  const { stateDir } = options
  const grace = options.grace ?? 10
  const fixedReserve = options.snapshotReserve
  const keep = options.keep
  const exit = checkBool('exit', options.exit, true)
  const log = options.log ?? streamLogger()

  let filter: SegmentFilter | undefined = options.filter
  if (options.keys !== undefined) {
    if (filter?.keys !== undefined) throw new OptionTypeError('createShutdown: give keys or filter.keys, not both', 'keys', 'ERR_INVALID_ARG_VALUE')
    filter = { ...filter, keys: options.keys }
  }
  segmentPredicate(filter) // owners that name no user throw now, not at the stop

  const signals = options.signals ?? DEFAULT_SIGNALS
  if (!Array.isArray(signals)) throw new TypeError('createShutdown: signals must be an array of signal names')
  for (const sig of signals) {
    if (typeof sig !== 'string' || !(sig in os.constants.signals) || UNCATCHABLE.has(sig)) throw new TypeError(`createShutdown: cannot listen for signal ${String(sig)}`)
  }

  const steps: Array<{ name: string; fn: ShutdownStep; timeout?: number }> = []
  let running: Promise<ShutdownReport> | undefined
  let finished: ShutdownReport | undefined
  let exiting = false

  const shutdown = async (trigger: string): Promise<ShutdownReport> => {
    const t0 = performance.now()
    const elapsed = () => performance.now() - t0
    // Under `shmkeep run`, the same arithmetic as run's stop timeout (src/run/deadline.ts),
    // so that the steps are done before run's KILL.
    const runPid = process.env.SHMKEEP_RUN
    const last = fixedReserve === undefined ? lastFinalSnapshotSeconds(stateDir, runPid ? RUN_REASONS : FINAL_REASONS) : undefined
    const reserve = fixedReserve ?? Math.max(2, 2 * (last ?? 0))
    // `shmkeep run` tells its app the stop timeout it computed (hooks and
    // all): the steps must be done within it, whatever grace we were given.
    const runStop = runPid ? Number(process.env.SHMKEEP_STOP_TIMEOUT) : NaN
    const budget = Math.max(0, Number.isFinite(runStop) && runStop >= 0 ? Math.min(grace - reserve, runStop) : grace - reserve)
    const why =
      (fixedReserve !== undefined
        ? 'the snapshotReserve option'
        : `max of 2 s and twice the last final snapshot, ${last === undefined ? 'none recorded yet' : `${last.toFixed(2)} s`}`) +
      (Number.isFinite(runStop) ? `; steps capped at shmkeep run's stop timeout, ${s1(runStop)}` : '')
    const deadline: ShutdownDeadline = {
      grace,
      snapshotReserve: reserve,
      steps: budget,
      ...(last !== undefined ? { lastSnapshotSeconds: last } : {}),
      explain: `deadline ${grace} s from ${trigger}: steps ${s1(budget)}, then the snapshot's reserve ${s1(reserve)} (${why})${runPid ? ', for the snapshot `shmkeep run` takes once this process has exited' : ''}`,
    }
    log.log('info', 'shutdown.start', `${trigger}: shutting down (${steps.length} step(s), then ${runPid ? 'exit: `shmkeep run` takes the snapshot' : 'the snapshot'})`, { trigger, steps: steps.map((s) => s.name) })
    log.log('info', 'shutdown.deadline', deadline.explain, { grace, snapshotReserve: reserve, steps: budget })
    if (budget === 0 && steps.length) log.log('warn', 'shutdown.deadline', `the snapshot's reserve (${s1(reserve)}) takes the whole grace period (${grace} s): every step is skipped`)
    if (last !== undefined && last > grace / 2) {
      log.log('warn', 'shutdown.deadline', `the last final snapshot took ${last.toFixed(1)} s, more than half of the ${grace} s grace period: this stop may be cut off by SIGKILL (raise the grace period)`)
    }

    const reports: StepReport[] = []
    /** Steps that timed out and have not returned yet: they may still write. */
    const lingering = new Set<string>()
    const budgetEnd = budget * 1000
    let budgetSpent = false
    for (const [i, step] of steps.entries()) {
      const tag = `step ${i + 1}/${steps.length} "${step.name}"`
      const left = budgetEnd - elapsed()
      // (A timer may fire a millisecond early: a step cut off by the budget spent it.)
      if (budgetSpent || left < 1) {
        const error = `no time left: the steps' budget of ${s1(budget)} is spent`
        reports.push({ name: step.name, status: 'skipped', ms: 0, error })
        log.log('warn', 'shutdown.step.skipped', `${tag} skipped: ${error}`, { step: step.name })
        continue
      }
      const own = step.timeout === undefined ? Infinity : step.timeout * 1000
      const limitMs = Math.min(own, left, MAX_TIMER_MS)
      const cutShort = limitMs < own
      const controller = new AbortController()
      const started = performance.now()
      let outcome: Promise<{ ok: true } | { ok: false; error: unknown }>
      try {
        outcome = Promise.resolve(step.fn(controller.signal)).then(
          () => ({ ok: true }) as const,
          (error: unknown) => ({ ok: false, error }) as const,
        )
      } catch (error) {
        outcome = Promise.resolve({ ok: false, error } as const)
      }
      let timer: NodeJS.Timeout | undefined
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), limitMs)))
      const r = await Promise.race([outcome, timedOut])
      clearTimeout(timer)
      const took = performance.now() - started
      const ms = Math.round(took)
      if (r !== 'timeout' && took > limitMs) {
        // Returned, but only after its time was up: a step that blocks the
        // event loop (synchronous work) cannot be cut off, and the timer
        // could not fire while it ran. It overran all the same.
        const error = `overran: it blocked for ${s1(took / 1000)}, past its ${s1(limitMs / 1000)}${cutShort ? ` (the steps' budget of ${s1(budget)})` : ''}; a step that blocks the event loop cannot be cut off`
        budgetSpent ||= cutShort
        reports.push({ name: step.name, status: 'timed-out', ms, limitMs: Math.round(limitMs), error })
        log.log('warn', 'shutdown.step.timeout', `${tag} ${error}${r.ok ? '' : ` (and failed: ${message(r.error)})`}; going on with the next`, { step: step.name, ms, limitMs: Math.round(limitMs) })
      } else if (r === 'timeout') {
        const error = cutShort
          ? `cut off after ${s1(limitMs / 1000)}: the steps' budget of ${s1(budget)} is spent (the snapshot keeps its ${s1(reserve)})`
          : `timed out after ${s1(limitMs / 1000)}`
        controller.abort(new DOMException(`shutdown step "${step.name}" ${error}`, 'TimeoutError'))
        budgetSpent ||= cutShort
        reports.push({ name: step.name, status: 'timed-out', ms, limitMs: Math.round(limitMs), error })
        log.log('warn', 'shutdown.step.timeout', `${tag} ${error}: its AbortSignal is aborted; going on with the next`, { step: step.name, ms, limitMs: Math.round(limitMs) })
        lingering.add(step.name)
        void outcome.then((o) => {
          lingering.delete(step.name)
          log.log('info', 'shutdown.step.late', `"${step.name}" returned ${Math.round(performance.now() - started)} ms after it started, ${o.ok ? 'without error' : `with ${message(o.error)}`} (it had timed out)`, { step: step.name })
        })
      } else if (r.ok) {
        reports.push({ name: step.name, status: 'ok', ms, limitMs: Math.round(limitMs) })
        log.log('info', 'shutdown.step', `${tag} done in ${ms} ms`, { step: step.name, ms })
      } else {
        const error = message(r.error)
        reports.push({ name: step.name, status: 'failed', ms, limitMs: Math.round(limitMs), error })
        log.log('error', 'shutdown.step.failed', `${tag} failed after ${ms} ms: ${error}; going on with the next`, { step: step.name, ms, error })
      }
    }
    const stepsOk = reports.every((r) => r.status === 'ok')

    let snap: ShutdownSnapshot
    if (runPid) {
      snap = { status: 'skipped', reason: 'shmkeep run takes the final snapshot' }
      log.log('info', 'shutdown.snapshot.skipped', `no snapshot here: this app runs under \`shmkeep run\` (SHMKEEP_RUN=${runPid}), which takes the final snapshot once the app has exited (one snapshot, not two)`)
    } else {
      if (lingering.size) {
        log.log('warn', 'shutdown.lingering', `step(s) ${[...lingering].map((n) => `"${n}"`).join(', ')} timed out and have not returned: if they ignore their AbortSignal they may write during the snapshot`)
      }
      try {
        const r = await snapshot({
          stateDir,
          filter,
          keep,
          reason: 'library',
          clean: stepsOk && lingering.size === 0,
          // Never wait for the state dir's lock past the deadline.
          lockTimeoutMs: Math.max(0, Math.floor(grace * 1000 - elapsed())),
          log,
        })
        snap = { status: 'saved', report: r }
        const d = describeSnapshot(r)
        log.log('info', 'shutdown.snapshot', d.message, d.fields)
        if (d.saved === 0) log.log('warn', 'snapshot.empty', `no segment to save${filter ? ' (none matches the keys or filter given)' : ''}`)
        if (r.durationMs / 1000 > reserve) log.log('warn', 'shutdown.deadline', `the snapshot took ${(r.durationMs / 1000).toFixed(1)} s, more than its reserve of ${s1(reserve)} (the next reserve is twice this snapshot)`)
      } catch (e) {
        const error = message(e)
        snap = { status: 'failed', error, ...(e instanceof SnapshotError ? { report: e.report } : {}) }
        log.log('error', 'shutdown.snapshot.failed', error)
      }
    }

    const exitCode = snap.status === 'failed' ? SHUTDOWN_EXIT.snapshotFailed : stepsOk ? SHUTDOWN_EXIT.ok : SHUTDOWN_EXIT.stepsFailed
    const durationMs = elapsed()
    if (durationMs > grace * 1000) log.log('warn', 'shutdown.deadline', `the shutdown took ${(durationMs / 1000).toFixed(1)} s, past the ${grace} s grace period`)
    log.log('info', 'shutdown.done', `shutdown done in ${Math.round(durationMs)} ms: exit status ${exitCode}`, {
      exitCode,
      ms: Math.round(durationMs),
      steps: reports.map((r) => ({ name: r.name, status: r.status, ms: r.ms })),
      snapshot: snap.status === 'saved' ? snap.report.generation : snap.status,
    })
    return (finished = { trigger, deadline, steps: reports, snapshot: snap, exitCode, durationMs })
  }

  const run = (trigger = 'manual'): Promise<ShutdownReport> => {
    if (typeof trigger !== 'string') throw new TypeError('run: trigger must be a string')
    running ??= shutdown(trigger)
    return running
  }

  const listeners = signals.map((sig) => {
    const listener = () => {
      if (finished) log.log('info', 'shutdown.signal', `${sig}: the shutdown already ran (exit status ${finished.exitCode})`)
      else if (running) log.log('info', 'shutdown.signal', `${sig} during the shutdown: ignored, the shutdown goes on`)
      const p = run(sig)
      if (!exit || exiting) return
      exiting = true
      p.then(
        (r) => process.exit(r.exitCode),
        (e) => {
          log.log('error', 'shutdown.failed', `shutdown failed: ${message(e)}`)
          process.exit(SHUTDOWN_EXIT.snapshotFailed)
        },
      )
    }
    process.on(sig, listener)
    return [sig, listener] as const
  })

  const api: Shutdown = {
    step(name, fn, stepOptions) {
      if (typeof name !== 'string' || name === '') throw new TypeError('step: name must be a non-empty string')
      if (typeof fn !== 'function') throw new TypeError(`step "${name}": fn must be a function`)
      checkEntryOptions('step', stepOptions, `step "${name}"`)
      const timeout = stepOptions?.timeout
      if (running) throw new Error(`step "${name}": the shutdown has already started`)
      steps.push({ name, fn, timeout })
      return api
    },
    run,
    dispose() {
      for (const [sig, l] of listeners.splice(0)) process.removeListener(sig, l)
    },
  }
  return api
}
