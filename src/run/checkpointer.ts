/**
 * Periodic checkpoints while the app runs (--checkpoint-interval): one at a
 * time, never overlapping the final snapshot. After each, the independent
 * fallback copy when one is needed (src/state/fallback.ts). At the stop,
 * cancel() resumes a frozen app at once and abandons a checkpoint or a
 * fallback copy in flight; what it returns resolves once that let go of the
 * state dir.
 */
import type { SegmentFilter } from '../filter'
import { humanDuration, humanSize, type Logger } from '../log'
import { snapshot, SnapshotError } from '../snapshot'
import { keepFallback } from '../state/fallback'
import type { Freezer } from './freeze'
import type { RunLineage } from './lineage'
import type { RunReport } from './report'

export interface CheckpointerOptions {
  /** Seconds between checkpoints; none when undefined. */
  intervalSeconds?: number
  stateDir: string
  insecureStateDir?: boolean
  keep?: number
  filter?: SegmentFilter
  /** How the app is stopped for an image of one instant (none: --freeze=none). */
  freezer?: Freezer
  lineage: RunLineage
  /** Counted here: taken, skipped, failed. */
  counts: RunReport['checkpoints']
  log: Logger
}

export class Checkpointer {
  private timer: NodeJS.Timeout | undefined
  private inFlight: { abort: AbortController; done: Promise<void> } | undefined
  private stopped = false
  /** After a failed checkpoint (e.g. a damaged previous generation), the next is written in full. */
  private lastFailed = false

  constructor(private readonly o: CheckpointerOptions) {}

  /** Arm the next checkpoint (nothing without an interval, or once cancelled). */
  schedule(): void {
    if (!this.o.intervalSeconds || this.stopped) return
    this.timer = setTimeout(() => {
      const abort = new AbortController()
      this.inFlight = { abort, done: this.take(abort) }
    }, this.o.intervalSeconds * 1000)
  }

  /** No more checkpoints; one in flight is thawed and abandoned. Resolves once it let go of the state dir. */
  cancel(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    const c = this.inFlight
    if (!c) return Promise.resolve()
    this.o.freezer?.thaw()
    c.abort.abort()
    return c.done
  }

  private async take(abort: AbortController): Promise<void> {
    const { freezer, log, lineage } = this.o
    let started = performance.now()
    let pauseMs = 0
    try {
      const r = await snapshot({
        stateDir: this.o.stateDir,
        insecureStateDir: this.o.insecureStateDir,
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
        incremental: !this.lastFailed,
        ...lineage.options(),
        keep: this.o.keep,
        filter: this.o.filter,
        log,
        signal: abort.signal,
        afterCopy: freezer
          ? () => {
              freezer.thaw()
              pauseMs = performance.now() - started
            }
          : undefined,
      })
      lineage.followed(r)
      log.log(
        'info',
        'checkpoint',
        `checkpoint ${r.generation}: ${r.segments.filter((x) => x.status === 'saved').length} segment(s), ${humanSize(r.bytes)} in ${humanDuration(r.durationMs)}; ${freezer ? `app paused ${humanDuration(pauseMs)}` : 'app not paused (--freeze=none: not an image of one instant)'}`,
        { generation: r.generation, bytes: r.bytes, ms: Math.round(r.durationMs), pauseMs: Math.round(pauseMs) },
      )
      this.lastFailed = false
      this.o.counts.taken++
      // Off the checkpoint's critical path (it is complete, CURRENT switched,
      // the lock let go): make sure a retained generation shares no data file
      // with CURRENT — only a linked (unchanged) file can be shared. A stop
      // aborts it like the checkpoint (cancel()).
      if (r.current && r.segments.some((s) => s.unchanged)) await keepFallback({ stateDir: this.o.stateDir, insecureStateDir: this.o.insecureStateDir, signal: abort.signal, log })
    } catch (e) {
      const message = (e as Error).message
      // CURRENT switched although durability is unknown: the lineage follows it.
      if (e instanceof SnapshotError) lineage.followed(e.report)
      if (abort.signal.aborted) {
        log.log('info', 'checkpoint.failed', 'checkpoint abandoned: the container is stopping')
      } else if (/EWOULDBLOCK|checkpoint skipped/.test(message)) {
        this.o.counts.skipped++
        log.log('warn', 'checkpoint.skipped', message.includes('EWOULDBLOCK') ? 'checkpoint skipped: another writer holds the state dir' : message.replace(/^.*?checkpoint skipped/, 'checkpoint skipped'))
      } else {
        this.lastFailed = true
        this.o.counts.failed++
        log.log('error', 'checkpoint.failed', `checkpoint failed: ${message}`)
      }
    } finally {
      freezer?.thaw()
      this.inFlight = undefined
      this.schedule()
    }
  }
}
