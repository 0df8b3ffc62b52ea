/**
 * How long the app may take to stop. The orchestrator SIGKILLs everything
 * `grace` seconds after its TERM; inside that, the final snapshot must fit:
 *
 *   stop timeout = grace − max(2 s, 2 × final snapshot time) − hook budgets
 *
 * (the final snapshot time is the median of the last three recorded).
 */
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

export interface Deadline {
  /** Seconds the app gets between the forwarded TERM and SIGKILL. */
  stopTimeout: number
  /** The arithmetic, for the log. */
  explain: string
  /** Set when the last snapshot took more than half the grace period. */
  warning?: string
}

export function stopDeadline(grace: number, lastSnapshotSeconds: number | undefined, hookBudgets: number, explicit?: number): Deadline {
  const reserve = Math.max(2, 2 * (lastSnapshotSeconds ?? 0))
  const computed = Math.max(0, grace - reserve - hookBudgets)
  const last = lastSnapshotSeconds === undefined ? 'no final snapshot recorded yet' : `final snapshot time ${lastSnapshotSeconds.toFixed(2)} s (median of the last 3)`
  const explain =
    explicit !== undefined
      ? `stop timeout ${explicit} s (--stop-timeout); grace ${grace} s, ${last}`
      : `stop timeout ${computed.toFixed(1)} s = grace ${grace} s − snapshot reserve ${reserve.toFixed(1)} s (max of 2 s and twice the ${last}) − hooks ${hookBudgets} s`
  const warning =
    lastSnapshotSeconds !== undefined && lastSnapshotSeconds > grace / 2
      ? `the last final snapshot took ${lastSnapshotSeconds.toFixed(1)} s, more than half of the ${grace} s grace period: the next stop may be cut off by SIGKILL (raise docker stop -t / terminationGracePeriodSeconds and --grace)`
      : undefined
  return { stopTimeout: explicit ?? computed, explain, warning }
}

/** "10", "10s", "500ms", "2m" → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text.trim())
  if (!m) throw new TypeError(`not a duration: "${text}" (e.g. 10, 10s, 500ms, 2m)`)
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : m[2] === 'h' ? n * 3600 : n
}
