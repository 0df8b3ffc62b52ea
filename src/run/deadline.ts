/**
 * How long the app may take to stop. The orchestrator SIGKILLs everything
 * `grace` seconds after its TERM; inside that, the final snapshot must fit:
 *
 *   stop timeout = grace − max(2 s, 2 × final snapshot time) − hook budgets
 *
 * (the final snapshot time is the median of the last three recorded; without
 * any, an estimate from the bytes to save and a measured throughput; a final
 * snapshot cut off by SIGKILL makes the next reserve at least twice what it
 * had). Under 1 s, `run` refuses to start.
 */
import fs from 'node:fs'
import { humanRate, humanSize } from '../log'
import { readRegularFile, replaceFile } from '../state/files'
import { StateDir } from '../state/statedir'

/** Why a generation was taken at the end of the app's life. */
const FINAL_REASONS: ReadonlySet<string> = new Set(['stop'])

/**
 * Seconds a final snapshot takes: the median of the newest three of the
 * given reasons recorded in the state dir, so that one slow stop on a busy
 * host does not eat the next app's stop timeout. Undefined: none recorded.
 */
export function lastFinalSnapshotSeconds(stateDir: string, reasons: ReadonlySet<string> = FINAL_REASONS): number | undefined {
  const seen: number[] = []
  try {
    const state = StateDir.open(stateDir)
    for (const g of state.generations().reverse()) {
      try {
        const r = state.readGeneration(g.name)
        if (reasons.has(r.reason)) seen.push(r.durationMs.total / 1000)
      } catch {
        // unreadable: look further back
      }
      if (seen.length === 3) break
    }
  } catch {
    // no state dir yet
  }
  if (seen.length === 0) return undefined
  return seen.sort((a, b) => a - b)[Math.floor(seen.length / 2)]
}

/** A final snapshot cut off by SIGKILL: its start is recorded, so the next reserve grows. */
export const STOPPING_FILE = 'STOPPING'

/**
 * Record that a final snapshot starts with `secondsLeft` before the SIGKILL
 * (removed by {@link stopFinished}). Found by the next start, it says the
 * snapshot needed more than that.
 */
export function stopStarting(state: StateDir, secondsLeft: number): void {
  replaceFile(state.path(STOPPING_FILE), `shmkeep-stopping ${new Date().toISOString()} ${secondsLeft.toFixed(3)}\n`, { durable: false })
}

export function stopFinished(state: StateDir): void {
  fs.rmSync(state.path(STOPPING_FILE), { force: true })
}

/** The last final snapshot that was cut off (its record), if any. */
export function cutOffStop(stateDir: string): { at: string; secondsLeft: number } | undefined {
  try {
    const m = /^shmkeep-stopping (\S+) (\d+(?:\.\d+)?)\n$/.exec(readRegularFile(StateDir.open(stateDir).path(STOPPING_FILE), 256).toString('latin1'))
    return m ? { at: m[1]!, secondsLeft: Number(m[2]) } : undefined
  } catch {
    return undefined
  }
}

export interface Deadline {
  /** Seconds the app gets between the forwarded TERM and SIGKILL. */
  stopTimeout: number
  /** Seconds kept for the final snapshot. */
  reserve: number
  /** The arithmetic, for the log. */
  explain: string
  /** Set when the stop timeout is under half the grace period, or the last snapshot took more than half. */
  warning?: string
  /** Set when the computed stop timeout is under 1 s (and --stop-timeout was not given): run refuses to start. */
  refuse?: string
}

/** What the snapshot reserve is based on. */
export interface ReserveBasis {
  /** Median seconds of the last final snapshots recorded. */
  lastSeconds?: number
  /** Without history: the bytes the final snapshot will save and a throughput measured here (bytes/s). */
  estimate?: { bytes: number; bytesPerSecond: number; from: string }
  /** The last final snapshot was cut off by SIGKILL with this many seconds left. */
  cutOff?: { secondsLeft: number }
}

/** The hooks that count against the grace period. */
export interface HookBudget {
  seconds: number
  preStop: number
  postStop: number
  timeout: number
}

/**
 *   stop timeout = grace − reserve − hooks
 *   reserve = max(2 s, 2 × final snapshot time), where the final snapshot
 *   time is the median of the last three recorded, else estimated from the
 *   bytes to save and a measured throughput; at least twice the time a
 *   snapshot cut off by SIGKILL had.
 */
export function stopDeadline(grace: number, basis: ReserveBasis | number | undefined, hooks: HookBudget | number, explicit?: number): Deadline {
  const b: ReserveBasis = typeof basis === 'number' ? { lastSeconds: basis } : (basis ?? {})
  const h: HookBudget = typeof hooks === 'number' ? { seconds: hooks, preStop: 0, postStop: 0, timeout: 0 } : hooks
  const estimated = b.lastSeconds === undefined && b.estimate && b.estimate.bytesPerSecond > 0 ? b.estimate.bytes / b.estimate.bytesPerSecond : undefined
  const seconds = b.lastSeconds ?? estimated ?? 0
  let reserve = Math.max(2, 2 * seconds)
  const why: string[] = []
  if (b.lastSeconds !== undefined) why.push(`twice the final snapshot time ${b.lastSeconds.toFixed(2)} s, median of the last 3`)
  else if (estimated !== undefined) why.push(`twice an estimated ${estimated.toFixed(2)} s: ${humanSize(b.estimate!.bytes)} at ${humanRate(b.estimate!.bytesPerSecond)} measured ${b.estimate!.from}`)
  else why.push('no final snapshot recorded yet')
  if (b.cutOff && 2 * b.cutOff.secondsLeft > reserve) {
    reserve = 2 * b.cutOff.secondsLeft
    why.push(`the last final snapshot was cut off by SIGKILL after ${b.cutOff.secondsLeft.toFixed(1)} s: twice that`)
  }
  const computed = Math.max(0, grace - reserve - h.seconds)
  const hookText = h.preStop + h.postStop > 0 ? ` (${h.preStop} pre-stop and ${h.postStop} post-stop, ${h.timeout} s each)` : ''
  const arithmetic = `stop timeout ${(grace - reserve - h.seconds).toFixed(1)} s = grace ${grace} s − snapshot reserve ${reserve.toFixed(1)} s (at least 2 s; ${why.join('; ')}) − hooks ${h.seconds} s${hookText}`
  const explain = explicit !== undefined ? `stop timeout ${explicit} s (--stop-timeout); grace ${grace} s, snapshot reserve ${reserve.toFixed(1)} s, hooks ${h.seconds} s` : arithmetic
  const refuse =
    explicit === undefined && computed < 1
      ? `${arithmetic}: under 1 s, the app would be killed at every stop. Raise --grace (and the orchestrator's grace period with it) to at least ${Math.ceil(reserve + h.seconds + 1)} s, lower --hook-timeout, or give --stop-timeout`
      : undefined
  let warning: string | undefined
  if (b.lastSeconds !== undefined && b.lastSeconds > grace / 2) {
    warning = `the last final snapshot took ${b.lastSeconds.toFixed(1)} s, more than half of the ${grace} s grace period: the next stop may be cut off by SIGKILL (raise docker stop -t / terminationGracePeriodSeconds and --grace)`
  } else if (!refuse && (explicit ?? computed) < grace / 2) {
    warning = `the app gets ${(explicit ?? computed).toFixed(1)} s to stop, under half of the ${grace} s grace period (snapshot reserve ${reserve.toFixed(1)} s, hooks ${h.seconds} s)`
  }
  return { stopTimeout: explicit ?? computed, reserve, explain, ...(warning ? { warning } : {}), ...(refuse ? { refuse } : {}) }
}

/** "10", "10s", "500ms", "2m" → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim())
  if (!m) throw new TypeError(`not a duration: "${text}" (e.g. 10, 10s, 500ms, 2m)`)
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : m[2] === 'h' ? n * 3600 : n
}
