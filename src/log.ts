/**
 * One line per event on stderr: `shmkeep: <message>` for people, or one JSON
 * object per line (`--log-format=json`) for log collectors. The library logs
 * nothing unless given a Logger; its reports carry the same facts.
 *
 * Sizes: a message (text) shows them for people with humanSize ("64.0 MiB");
 * the event's fields (JSON lines, --json reports) carry exact numbers of bytes.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error'

export interface Logger {
  /** `event` is a stable name (e.g. "snapshot.segment"), `fields` its facts. */
  log(level: Level, event: string, message: string, fields?: Record<string, unknown>): void
  /**
   * Optional: a long operation (a snapshot's copy, a restore, a verify) of
   * `total` bytes begins; the handle hears how far it got. The CLI's logger
   * shows it (src/progress.ts); a logger without it hears nothing.
   */
  progress?(operation: string, total: number): ProgressHandle
}

/** One operation's progress: `advance` as bytes are done, `end` once, success or not (call it in a finally). */
export interface ProgressHandle {
  advance(bytes: number): void
  end(): void
}

/**
 * The operations' side of a ProgressHandle (what startProgress returns).
 * `advance` reports whole objects as they finish; `follow` adds a counter
 * that moves within one (the addon's job token, src/cancel.ts), read every
 * {@link FOLLOW_MS}. The logger's handle hears the larger of the two, never
 * more than the total, as `advance` calls: a library Logger gets the same
 * fine-grained counts as the CLI's.
 */
export interface OperationProgress extends ProgressHandle {
  follow(bytesDone: () => number): void
}

/** How often a followed counter is read (the terminal line is redrawn every 200 ms, a log line every 5 s). */
export const FOLLOW_MS = 250

const noProgress: OperationProgress = { advance() {}, follow() {}, end() {} }

/** The logger's progress handle for an operation, or one that does nothing. */
export function startProgress(log: Logger, operation: string, total: number): OperationProgress {
  const handle = log.progress?.(operation, total)
  if (!handle) return noProgress
  let advanced = 0
  let reported = 0
  let counter: (() => number) | undefined
  let timer: NodeJS.Timeout | undefined
  const report = () => {
    const done = Math.min(total, Math.max(advanced, counter?.() ?? 0))
    if (done <= reported) return
    handle.advance(done - reported)
    reported = done
  }
  return {
    advance(bytes) {
      advanced += bytes
      report()
    },
    follow(bytesDone) {
      counter = bytesDone
      timer ??= setInterval(report, FOLLOW_MS).unref() // never what keeps the process alive
    },
    end() {
      clearInterval(timer)
      counter = undefined
      handle.end()
    },
  }
}

const order: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 }

export interface StreamLoggerOptions {
  format?: 'text' | 'json'
  /** Lowest level written (default info). */
  level?: Level
  write?: (line: string) => void
  /** Prefix of text lines (default "shmkeep"). */
  name?: string
}

export function streamLogger(options: StreamLoggerOptions = {}): Logger {
  const { format = 'text', level = 'info', name = 'shmkeep' } = options
  const write = options.write ?? ((line: string) => process.stderr.write(line))
  return {
    log(lvl, event, message, fields) {
      if (order[lvl] < order[level]) return
      if (format === 'json') {
        write(JSON.stringify({ time: new Date().toISOString(), level: lvl, event, msg: message, ...fields }) + '\n')
      } else {
        const tag = lvl === 'warn' ? 'warning: ' : lvl === 'error' ? 'error: ' : ''
        write(`${name}: ${tag}${message}\n`)
      }
    },
  }
}

export const silentLogger: Logger = { log() {} }

/** A size for people, in binary units: "512 B", "4.0 KiB", "64.0 MiB". Exact byte counts go in fields and JSON. */
export function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = bytes
  let i = 0
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`
}

/** A throughput for people: "312.5 MiB/s". */
export function humanRate(bytesPerSecond: number): string {
  return `${humanSize(Math.round(bytesPerSecond))}/s`
}

/** A duration for people: "850 ms", "4.2 s", "3 min 05 s", "1 h 02 min". */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const s = Math.round(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`
  const m = Math.round(s / 60)
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`
}

/** "no such file or directory" for ENOENT and the like: the message without Node's "ENOENT: ..., stat 'path'" wrapping. */
export function describeFsError(e: unknown): string {
  const err = e as NodeJS.ErrnoException
  const known: Record<string, string> = { ENOENT: 'no such file or directory', EACCES: 'permission denied', ENOTDIR: 'a path component is not a directory', ELOOP: 'too many symbolic links', EROFS: 'read-only file system', ENOSPC: 'no space left on device', EPERM: 'operation not permitted' }
  return (err.code && known[err.code]) ?? err.message ?? String(e)
}

/** An error as one line: a file system error names its path and what went wrong, not Node's "ENOENT: …, stat '…'". */
export function errorLine(e: unknown): string {
  const err = e as NodeJS.ErrnoException
  if (err && typeof err === 'object' && typeof err.code === 'string' && typeof err.path === 'string' && /^E[A-Z]+$/.test(err.code)) {
    return `${err.path}: ${describeFsError(err)}`
  }
  return e instanceof Error ? e.message : String(e)
}
