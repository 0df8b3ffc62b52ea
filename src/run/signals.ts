/**
 * Which signals `shmkeep run` forwards to the app, and `--rewrite FROM:TO`.
 *
 * Every catchable signal Node lets us listen to, except CHLD (libuv needs it
 * to learn about its children) and the synchronous faults SEGV, BUS, FPE,
 * ILL (they are about shmkeep itself, never sent on purpose).
 */
import os from 'node:os'

const NEVER = new Set(['SIGKILL', 'SIGSTOP', 'SIGCHLD', 'SIGSEGV', 'SIGBUS', 'SIGFPE', 'SIGILL'])

/** Names of the signals to forward, e.g. "SIGTERM". */
export function forwardableSignals(): NodeJS.Signals[] {
  const names = Object.keys(os.constants.signals) as NodeJS.Signals[]
  // SIGIOT, SIGPOLL, SIGUNUSED are aliases of ABRT, IO, SYS: listening twice forwards twice.
  const seen = new Set<number>()
  return names.filter((name) => {
    const n = os.constants.signals[name]
    if (NEVER.has(name) || seen.has(n)) return false
    seen.add(n)
    return true
  })
}

/** "TERM", "SIGTERM", "15" → "SIGTERM"; TypeError otherwise. */
export function parseSignal(text: string): NodeJS.Signals {
  const t = text.trim().toUpperCase()
  if (/^\d+$/.test(t)) {
    const n = Number(t)
    const name = (Object.keys(os.constants.signals) as NodeJS.Signals[]).find((k) => os.constants.signals[k] === n)
    if (name) return name
  } else {
    const name = (t.startsWith('SIG') ? t : 'SIG' + t) as NodeJS.Signals
    if (name in os.constants.signals) return name
  }
  throw new TypeError(`unknown signal "${text}"`)
}

/** Parse `--rewrite TERM:QUIT` options into a map. */
export function parseRewrites(specs: string[]): Map<NodeJS.Signals, NodeJS.Signals> {
  const map = new Map<NodeJS.Signals, NodeJS.Signals>()
  for (const spec of specs) {
    const parts = spec.split(':')
    if (parts.length !== 2) throw new TypeError(`--rewrite takes FROM:TO, e.g. TERM:QUIT (not "${spec}")`)
    map.set(parseSignal(parts[0]!), parseSignal(parts[1]!))
  }
  return map
}

export function signalNumber(name: NodeJS.Signals): number {
  return os.constants.signals[name]
}

export function signalName(n: number): string {
  return (Object.keys(os.constants.signals) as NodeJS.Signals[]).find((k) => os.constants.signals[k] === n) ?? `signal ${n}`
}
