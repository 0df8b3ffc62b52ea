/**
 * The lineage `run` keeps for its whole life: the generation its live state
 * descends from. run knows it from its own restore, whatever the app does to
 * its objects afterwards; undefined means unknown (its snapshots then go
 * beside CURRENT). Checkpoints and the final snapshot share it.
 */
export class RunLineage {
  /** The parent generation (null: a first start), or undefined: unknown. */
  parent: string | null | undefined
  /** Snapshots go beside CURRENT (a failed restore, started anyway without --accept-new-state). */
  side = false
  /** --accept-new-state: the first snapshot of the new state switches CURRENT. */
  private forceNext = false

  constructor(private readonly force = false) {}

  /** After a failed restore, started anyway: beside CURRENT, or (--accept-new-state) replacing it once. */
  startedAnyway(acceptNewState: boolean): void {
    this.side = !acceptNewState
    this.forceNext = acceptNewState
  }

  /** The options every snapshot of this run shares: the lineage, and whether CURRENT may move. */
  options(): { side: boolean; force: boolean; parent?: string | null } {
    return { side: this.side, force: this.force || this.forceNext, ...(this.parent !== undefined ? { parent: this.parent } : {}) }
  }

  /** After a snapshot: when CURRENT moved to it, it is the parent of the next. */
  followed(r: { current: boolean; generation: string | null }): void {
    if (!r.current) return
    this.parent = r.generation
    this.forceNext = false
  }
}
