/**
 * Whether a new generation may become CURRENT, or must be written beside it.
 * A pure function of what the snapshot found, so that every reason can be
 * tested without a state dir, and so that lineage work can feed it more.
 *
 * The rule: CURRENT moves only along one line of state. It stays put when the
 * operator asked for a side generation; when the lineage of the live state is
 * unknown (src/state/lineage.ts: this namespace was not restored from this
 * state dir, or its record was removed) while CURRENT exists; when CURRENT
 * names another generation than the one this state descends from (another
 * writer shares the state dir); and when CURRENT is unreadable. With a known
 * lineage even an empty generation becomes CURRENT: the app removed its
 * objects itself (PostgreSQL at a clean stop), and the next start must not
 * bring back crash-time state. `force` overrides all but the operator's own ask.
 */

export interface SideInput {
  /** The operator asked for a generation beside CURRENT. */
  asked: boolean
  /** Switch CURRENT even when the lineage says otherwise. */
  force: boolean
  /** What CURRENT names: a generation, null (no CURRENT), or why it is unreadable. */
  current: { name: string | null } | { error: string }
  /** Objects (segments and other kinds) CURRENT's generation holds (0 when none, or unreadable). */
  currentSegments: number
  /** The generation the live state descends from (null: a first start). */
  parent: string | null
  /** Whether the lineage is known at all (the namespace's record, or the caller's own restore). */
  lineage: { known: true } | { known: false; why: string }
}

export type SideDecision = { side: false } | { side: true; reason: string }

export function decideSide(i: SideInput): SideDecision {
  if (i.asked) return { side: true, reason: 'asked to write beside CURRENT' }
  if (i.force) return { side: false }
  if ('error' in i.current) return { side: true, reason: `CURRENT is unreadable (${i.current.error})` }
  const current = i.current.name
  if (current !== null && !i.lineage.known) {
    return { side: true, reason: `lineage unknown: ${i.lineage.why}${i.currentSegments ? `; CURRENT (${current}) holds ${i.currentSegments} object(s)` : ''}` }
  }
  if (current !== null && current !== i.parent) {
    return {
      side: true,
      reason: `CURRENT names ${current}, not this state's parent (${i.parent ?? 'none: this state was not restored from this state dir'}): another writer may share this state dir`,
    }
  }
  return { side: false }
}
