/**
 * The outcome of a snapshot, and the exit code each command gives it: the
 * project's one table (docs/OPERATIONS.md, `shmkeep snapshot --help`,
 * `shmkeep run --help` print it). Later work cites these rows rather than
 * inventing codes of its own.
 *
 * | outcome                                                       | snapshot | run (final snapshot) |
 * |---------------------------------------------------------------|----------|----------------------|
 * | saved: CURRENT switched, durable                              | 0        | the app's status     |
 * | failed: nothing switched                                      | 1        | 124                  |
 * | usage error                                                   | 2        | 2                    |
 * | side: written beside CURRENT (lineage unknown, another writer)| 3        | 123                  |
 * | partial: saved in part (unsaved segments named), CURRENT switched | 4    | 123                  |
 * | undurable: CURRENT switched, an fsync after the switch failed | 5        | 123                  |
 * | restore failed, state dir missing (the app was not started)   | —        | 125                  |
 *
 * When two apply, the first of side, undurable, partial is the outcome (a
 * side generation never switches CURRENT; durability unknown weighs more
 * than a missing segment).
 */

export type SnapshotOutcome = 'saved' | 'failed' | 'side' | 'partial' | 'undurable'

/** `shmkeep snapshot`'s exit code per outcome. */
export const SNAPSHOT_EXIT: Record<SnapshotOutcome, number> = {
  saved: 0,
  failed: 1,
  side: 3,
  partial: 4,
  undurable: 5,
}

/** `shmkeep run`'s exit code per outcome of its final snapshot; `app`: the app's own status. */
export const RUN_SNAPSHOT_EXIT: Record<SnapshotOutcome, number | 'app'> = {
  saved: 'app',
  failed: 124,
  side: 123,
  partial: 123,
  undurable: 123,
}

/** The outcome from what the snapshot did. */
export function snapshotOutcome(r: { generation: string | null; current: boolean; side: boolean; durable: boolean; unsaved: readonly unknown[] }): SnapshotOutcome {
  if (r.generation === null) return 'failed'
  if (r.side) return 'side'
  if (!r.current) return 'failed'
  if (!r.durable) return 'undurable'
  if (r.unsaved.length) return 'partial'
  return 'saved'
}

/** The table as --help prints it. */
export const EXIT_TABLE_HELP = `Exit codes (one table for shmkeep snapshot and shmkeep run's final snapshot):
  outcome of the snapshot                                snapshot  run
  saved, CURRENT switched, durable                       0         the app's status
  failed, nothing switched                               1         124
  usage error                                            2         2
  written beside CURRENT (lineage unknown, other writer) 3         123
  saved in part (unsaved segments named), switched       4         123
  CURRENT switched, durability unknown (fsync failed)    5         123
  restore failed, state dir missing (app not started)    -         125
Under run, 123 means the app's state was not fully kept: the app's own status
and the reason are in the log.`
