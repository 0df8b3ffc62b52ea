/**
 * Whether a new generation may become CURRENT, or must be written beside it.
 * A pure function of what the snapshot found, so that every reason can be
 * tested without a state dir, and so that lineage work can feed it more.
 *
 * The rule: CURRENT moves only along one line of state. It stays put when the
 * operator asked for a side generation; when the new generation saves nothing
 * while CURRENT holds segments (an app that removed its segments at exit must
 * not bury the saved state); when CURRENT names another generation than the
 * one this state descends from (another writer shares the state dir); and
 * when CURRENT is unreadable. `force` overrides all but the operator's own ask.
 */

export interface SideInput {
  /** The operator asked for a generation beside CURRENT. */
  asked: boolean
  /** Switch CURRENT even when the lineage says otherwise. */
  force: boolean
  /** What CURRENT names: a generation, null (no CURRENT), or why it is unreadable. */
  current: { name: string | null } | { error: string }
  /** Segments CURRENT's generation holds (0 when none, or unreadable). */
  currentSegments: number
  /** The generation the live state descends from (null: not restored from here). */
  parent: string | null
  /** Segments the new generation holds. */
  saving: number
}

export type SideDecision = { side: false } | { side: true; reason: string }

export function decideSide(i: SideInput): SideDecision {
  if (i.asked) return { side: true, reason: 'asked to write beside CURRENT' }
  if (i.force) return { side: false }
  if ('error' in i.current) return { side: true, reason: `CURRENT is unreadable (${i.current.error})` }
  const current = i.current.name
  if (current !== null && i.saving === 0 && i.currentSegments > 0) {
    return { side: true, reason: `no segment to save, and CURRENT (${current}) holds ${i.currentSegments}: kept CURRENT (--force to switch to the empty generation)` }
  }
  if (current !== null && current !== i.parent) {
    return {
      side: true,
      reason: `CURRENT names ${current}, not this state's parent (${i.parent ?? 'none: this state was not restored from this state dir'}): another writer may share this state dir`,
    }
  }
  return { side: false }
}
