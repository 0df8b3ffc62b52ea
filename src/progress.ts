/**
 * Progress of long work (a multi-GiB snapshot, restore or verify), shown
 * from the byte counts the operations report through their Logger
 * (`Logger.progress`, src/log.ts):
 *
 * - on a terminal: one line, redrawn in place a few times a second —
 *   "snapshot: 1.2 GiB of 4.0 GiB (30%), 512.0 MiB/s, 5.6 s left" — erased
 *   when the operation ends or before any log line is written;
 * - in a log (not a terminal, or `--log-format=json`): nothing for an
 *   operation that ends within `quietMs` (2 s), then one `progress` event
 *   every `everyMs` (5 s) with the exact numbers in its fields.
 *
 * The bytes come chunk by chunk (startProgress in src/log.ts follows the
 * workers' job token), so a single multi-GiB segment moves too; the rate is
 * the average since the start.
 */
import { humanDuration, humanRate, humanSize, type Logger, type ProgressHandle } from './log'

export interface ProgressOptions {
  /** Where log-mode lines go (as `progress` events). */
  log: Logger
  /** A terminal to draw one line on (omit: log mode). */
  terminal?: { write(text: string): unknown; columns?: number }
  /** The clock, in ms (default performance.now): tests pass their own. */
  now?: () => number
  /** Run a timer that calls tick() (default true; tests call tick() themselves). */
  timer?: boolean
  /** How long an operation runs before it is shown (default: 2000 ms in a log, 300 ms on a terminal). */
  quietMs?: number
  /** Between two log lines, or two redraws on a terminal (default 5000 ms / 200 ms). */
  everyMs?: number
}

interface Operation {
  name: string
  total: number
  bytes: number
  started: number
  /** When it was last shown (logged or drawn), or undefined: never yet. */
  shown?: number
}

const ERASE = '\r\x1b[K'

export class Progress {
  private current: Operation | undefined
  private drawn = false
  private ticker: NodeJS.Timeout | undefined
  private readonly now: () => number
  private readonly quietMs: number
  private readonly everyMs: number

  constructor(private readonly o: ProgressOptions) {
    this.now = o.now ?? (() => performance.now())
    this.quietMs = o.quietMs ?? (o.terminal ? 300 : 2000)
    this.everyMs = o.everyMs ?? (o.terminal ? 200 : 5000)
  }

  /** An operation of `total` bytes begins (it replaces one still shown: operations do not nest). */
  start(name: string, total: number): ProgressHandle {
    this.erase()
    const op: Operation = { name, total, bytes: 0, started: this.now() }
    this.current = op
    if ((this.o.timer ?? true) && !this.ticker) {
      this.ticker = setInterval(() => this.tick(), Math.min(this.everyMs, 500))
      this.ticker.unref() // never what keeps the process alive
    }
    return {
      advance: (bytes) => {
        op.bytes += bytes
        if (this.current === op) this.tick()
      },
      end: () => {
        if (this.current !== op) return
        this.current = undefined
        this.erase()
        clearInterval(this.ticker)
        this.ticker = undefined
      },
    }
  }

  /** Show the current operation if it is time to (the timer calls this). */
  tick(): void {
    const op = this.current
    if (!op) return
    const now = this.now()
    if (now - op.started < this.quietMs) return
    if (op.shown !== undefined && now - op.shown < this.everyMs) return
    op.shown = now
    const text = describe(op, now)
    if (this.o.terminal) {
      const line = `shmkeep: ${text.message}`
      const width = this.o.terminal.columns ?? 0
      this.o.terminal.write(ERASE + (width > 1 && line.length >= width ? line.slice(0, width - 1) : line))
      this.drawn = true
    } else {
      this.o.log.log('info', 'progress', text.message, text.fields)
    }
  }

  /** Write a log line on the terminal without mixing it into the progress line (redrawn on the next tick). */
  interrupt(write: () => void): void {
    if (this.drawn && this.current) this.current.shown = undefined
    this.erase()
    write()
  }

  private erase(): void {
    if (!this.drawn) return
    this.o.terminal?.write(ERASE)
    this.drawn = false
  }
}

/** "restore: 1.2 GiB of 4.0 GiB (30%), 512.0 MiB/s, 5.6 s left", and its facts. */
export function describe(op: { name: string; total: number; bytes: number; started: number }, now: number): { message: string; fields: Record<string, unknown> } {
  const elapsedMs = Math.max(0, now - op.started)
  const rate = elapsedMs > 0 ? op.bytes / (elapsedMs / 1000) : 0
  const leftMs = rate > 0 ? ((op.total - op.bytes) / rate) * 1000 : undefined
  const percent = op.total > 0 ? Math.floor((op.bytes / op.total) * 100) : 100
  const pace = rate > 0 ? `${humanRate(rate)}, ${humanDuration(leftMs!)} left` : `${humanDuration(elapsedMs)} so far`
  return {
    message: `${op.name}: ${humanSize(op.bytes)} of ${humanSize(op.total)} (${percent}%), ${pace}`,
    fields: { operation: op.name, bytes: op.bytes, total: op.total, elapsedMs: Math.round(elapsedMs), bytesPerSecond: Math.round(rate), ...(leftMs !== undefined ? { msLeft: Math.round(leftMs) } : {}) },
  }
}

/**
 * A logger that also shows progress: `base` writes the lines, through
 * `write` so that on a terminal a log line first erases the progress line.
 */
export function progressLogger(makeBase: (write: (line: string) => void) => Logger, options: Omit<ProgressOptions, 'log'> & { write: (line: string) => void }): Logger {
  let progress: Progress | undefined
  const base = makeBase((line) => (progress ? progress.interrupt(() => options.write(line)) : options.write(line)))
  progress = new Progress({ ...options, log: base })
  const p = progress
  return {
    log: (...args) => base.log(...args),
    progress: (operation, total) => p.start(operation, total),
  }
}
