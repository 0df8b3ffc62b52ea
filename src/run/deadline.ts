/**
 * How long the app may take to stop. The orchestrator SIGKILLs everything
 * `grace` seconds after its TERM; inside that, the final snapshot must fit:
 *
 *   stop timeout = grace − max(2 s, 2 × last final snapshot) − hook budgets
 */

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
  const last = lastSnapshotSeconds === undefined ? 'no final snapshot recorded yet' : `last final snapshot ${lastSnapshotSeconds.toFixed(2)} s`
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
