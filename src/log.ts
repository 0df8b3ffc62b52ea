/**
 * One line per event on stderr: `shmkeep: <message>` for people, or one JSON
 * object per line (`--log-format=json`) for log collectors. The library logs
 * nothing unless given a Logger; its reports carry the same facts.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error'

export interface Logger {
  /** `event` is a stable name (e.g. "snapshot.segment"), `fields` its facts. */
  log(level: Level, event: string, message: string, fields?: Record<string, unknown>): void
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
