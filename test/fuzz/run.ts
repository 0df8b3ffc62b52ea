/**
 * The fuzz's parent side: build the base state dir once, run cases in a few
 * driver processes (test/fuzz/driver.mjs, each in an IPC namespace of its own
 * under `strace -f -y -e trace=openat`), watch them for crashes and hangs,
 * and classify every case with the oracle:
 *
 * - restored: the namespace holds exactly what the generation restore names
 *   held when it was saved (kernel's view: ids, attributes, hashed bytes),
 *   with the case's valid forgeries applied — nothing more, nothing less;
 * - refused: restore threw its RestoreError and the namespace is empty
 *   (shmkeep's lineage queue included);
 * - nothing: restore found no generation, and there is none (a real
 *   directory gen-N) in the state dir;
 * anything else is a failure: wrong or mixed bytes, leftovers, an error that
 * is not a refusal or a refusal that is a crash in disguise (a TypeError's
 * message), a driver that died or hung more than 30 s, an open that left the
 * state dir (a followed link) or touched the bait outside it.
 */
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { expected, line, planCase, type Base, type Case, type Obj } from './plan'

export const driver = path.join(__dirname, 'driver.mjs')
/** A case whose restore runs longer than this is a hang. */
export const HANG_MS = 30_000

export interface Built {
  base: string
  bait: string
  work: string
  pkg: string
  /** Objects live at each snapshot, by generation. */
  saved: Record<string, Obj[]>
  current: string
  description: Base
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300_000 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.error ?? ''}`)
}

/** Build the base state dir in a namespace of its own, and what the planner needs of it. */
export function build(dir: string, pkg: string): Built {
  const base = path.join(dir, 'base')
  const out = path.join(dir, 'saved.json')
  sh('unshare', ['--ipc', process.execPath, driver, 'build', pkg, base, out])
  const { generations, current } = JSON.parse(fs.readFileSync(out, 'utf8'))
  // The bait: an intact copy of the whole state dir outside it, and a FIFO.
  // Links point here; no open may ever reach it.
  const bait = path.join(dir, 'bait')
  fs.mkdirSync(bait)
  sh('cp', ['-a', '--sparse=always', '--reflink=never', base, path.join(bait, 'state')])
  sh('mkfifo', ['-m', '0600', path.join(bait, 'fifo')])
  const work = path.join(dir, 'work')
  fs.mkdirSync(work)
  const entries: Base['entries'] = []
  const json: Base['json'] = {}
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(base, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name
      const st = fs.statSync(path.join(base, r))
      entries.push({ rel: r, dir: e.isDirectory(), size: st.size })
      if (e.isDirectory()) walk(r)
      else if (e.name === 'GENERATION' || e.name.endsWith('.meta')) {
        const data = fs.readFileSync(path.join(base, r))
        json[r] = JSON.parse(data.subarray(data.indexOf(10) + 1).toString('utf8'))
      }
    }
  }
  walk('')
  return { base, bait, work, pkg, saved: generations, current, description: { entries, json, generations: Object.keys(generations).sort() } }
}

/** What the driver reports for a case. */
interface DriverResult {
  done: number
  outcome: 'restored' | 'nothing' | 'refused' | 'refused (system error)' | 'threw'
  generation?: string | null
  message?: string
  objects: Obj[]
  lineageQueues: number
  gens: string[]
  notes: string[]
  logs: string[]
  ms: number
  /** How the bait outside the state dir changed during the case, if it did. */
  bait?: string
}

export interface Verdict {
  id: number
  classes: string[]
  /** restored (which generation; "forged" when a valid forgery shows), refused, nothing — or a failure. */
  outcome: string
  failure?: string
  /** A refusal that is a system error rather than a RestoreError: its message. */
  note?: string
  ms?: number
}

/** One openat from strace -y: the directory, the path, the result (the real path of the fd, or an errno). */
interface Open {
  dir: string
  file: string
  fd: number
  real?: string
}

const OPEN = /openat\((AT_FDCWD|\d+)(?:<([^>]*)>)?, "((?:[^"\\]|\\.)*)", [^)]*\) = (-?\d+)(?:<([^>]*)>)?/

/** The opens of each case, from the markers the driver opens around its restore. */
export function parseTrace(text: string): Map<number, Open[]> {
  const byCase = new Map<number, Open[]>()
  const pending = new Map<string, string>()
  let current: number | undefined
  for (const raw of text.split('\n')) {
    const m0 = /^(\d+)\s+(.*)$/.exec(raw)
    if (!m0) continue
    const [, pid, rest] = m0 as unknown as [string, string, string]
    let call = rest
    if (rest.endsWith('<unfinished ...>')) {
      pending.set(pid, rest.slice(0, -'<unfinished ...>'.length))
      continue
    }
    const resumed = /^<\.\.\. openat resumed>(.*)$/.exec(rest)
    if (resumed) {
      call = (pending.get(pid) ?? '') + resumed[1]
      pending.delete(pid)
    }
    const m = OPEN.exec(call)
    if (!m) continue
    const file = m[3]!
    const marker = /^\/nonexistent\/shmkeep-fuzz-mark-(\d+)-(start|end)$/.exec(file)
    if (marker) {
      current = marker[2] === 'start' ? Number(marker[1]) : undefined
      if (current !== undefined) byCase.set(current, [])
      continue
    }
    if (current === undefined) continue
    byCase.get(current)!.push({ dir: m[2] ?? '', file, fd: Number(m[4]), real: m[5] })
  }
  return byCase
}

const under = (p: string, dir: string) => p === dir || p.startsWith(dir + '/')

/** An open that left the state dir `d`, or reached the bait: a description, or undefined. */
export function escape(opens: Open[], d: string, bait: string): string | undefined {
  for (const o of opens) {
    const asked = path.resolve(o.dir || '/', o.file)
    if (under(asked, bait)) return `opened ${asked} (the bait outside the state dir), fd ${o.fd}`
    if (o.fd >= 0 && o.real && under(o.real, bait)) return `opened ${asked} and got ${o.real} (outside the state dir)`
    if (o.fd >= 0 && o.real && under(asked, d) && !under(o.real, d)) return `opened ${asked} and got ${o.real} (outside the state dir)`
  }
  return undefined
}

const CRASH = /TypeError|RangeError|ReferenceError|SyntaxError|Cannot read prop|is not a function|is not iterable|Cannot convert|Invalid array length|Maximum call stack|of undefined|of null|\bNaN\b/

/** The oracle. */
export function judge(c: Case, r: DriverResult, built: Built): Verdict {
  const v: Verdict = { id: c.id, classes: c.classes, outcome: r.outcome, ms: r.ms }
  const have = r.objects.map(line).sort()
  const fail = (why: string) => ({ ...v, failure: why })
  if (r.bait) return fail(`something outside the state dir changed: ${r.bait}`)
  if (r.outcome === 'threw') return fail(`restore threw something other than a RestoreError: ${r.message}`)
  if (r.outcome === 'refused' || r.outcome === 'refused (system error)') {
    if (CRASH.test(r.message ?? '')) return fail(`a crash reported as a refusal: ${r.message}`)
    if (have.length || r.lineageQueues) return fail(`refused (${r.message}) but left ${have.length} object(s) and ${r.lineageQueues} lineage queue(s): ${have.join('; ')}`)
    return r.outcome === 'refused' ? v : { ...v, note: r.message }
  }
  if (r.outcome === 'nothing') {
    if (r.gens.length) return fail(`restored nothing although ${r.gens.join(', ')} are in the state dir`)
    if (have.length) return fail(`restored nothing but the namespace holds ${have.join('; ')}`)
    return v
  }
  const gen = r.generation!
  const saved = built.saved[gen]
  if (!saved) return fail(`restored ${gen}, which the base does not have`)
  const want = expected(gen, saved, c.effects)
  if (have.join('\n') !== want.join('\n')) {
    const extra = have.filter((x) => !want.includes(x))
    const missing = want.filter((x) => !have.includes(x))
    return fail(`restored ${gen}, but the namespace holds other objects than its records: unexpected [${extra.join('; ')}], missing [${missing.join('; ')}]`)
  }
  // 0: the lineage could not be recorded (a damaged LINEAGE file): a warning, the restore stands.
  if (r.lineageQueues > 1) return fail(`restored ${gen} with ${r.lineageQueues} lineage queues`)
  const asSaved = expected(gen, saved, []).join('\n') === want.join('\n')
  return { ...v, outcome: `restored ${gen === built.current ? 'CURRENT' : 'older'}${asSaved ? '' : ' (forged)'}` }
}

export interface RunOptions {
  seed: number
  count: number
  /** Driver processes at once. */
  parallel: number
  /** Cases given explicitly (regressions) instead of planned from the seed. */
  cases?: Case[]
  /** Planned case numbers to run (default 0..count-1). */
  only?: number[]
}

/**
 * Run cases in `parallel` drivers (each its own `unshare --ipc` and strace),
 * restarting a driver after a crash or a hang, and judge every case.
 */
export async function fuzz(built: Built, dir: string, options: RunOptions): Promise<Verdict[]> {
  const ids = options.only ?? Array.from({ length: options.count }, (_, i) => i)
  const cases = options.cases ?? ids.map((i) => planCase(options.seed, i, built.description))
  const byId = new Map(cases.map((c) => [c.id, c]))
  const verdicts = new Map<number, Verdict>()
  const shares = Array.from({ length: options.parallel }, (_, k) => cases.filter((_, i) => i % options.parallel === k))
  await Promise.all(shares.map((share, k) => runShare(built, dir, k, share, byId, verdicts)))
  const out = cases.map((c) => verdicts.get(c.id) ?? { id: c.id, classes: c.classes, outcome: 'lost', failure: 'no result' })
  return out
}


async function runShare(built: Built, dir: string, k: number, share: Case[], byId: Map<number, Case>, verdicts: Map<number, Verdict>): Promise<void> {
  let rest = share
  for (let attempt = 0; rest.length; attempt++) {
    const tag = `${k}-${attempt}`
    const planFile = path.join(dir, `plan-${tag}.json`)
    const results = path.join(dir, `results-${tag}.jsonl`)
    const trace = path.join(dir, `trace-${tag}.txt`)
    fs.writeFileSync(planFile, JSON.stringify({ pkg: built.pkg, base: built.base, bait: built.bait, work: built.work, cases: rest }))
    const child = spawn('unshare', ['--ipc', 'strace', '-f', '--seccomp-bpf', '-y', '-e', 'trace=openat', '-o', trace, process.execPath, driver, 'run', planFile, results], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    })
    let stderr = ''
    child.stderr!.on('data', (b) => (stderr = (stderr + String(b)).slice(-4000)))
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
    // Watch: a case started and not done for HANG_MS is a hang.
    let hung: number | undefined
    const tail = new Tail(results)
    const startedAt = new Map<number, number>()
    const watch = setInterval(() => {
      for (const e of tail.read()) {
        if ('start' in e) startedAt.set(e.start, Date.now())
        if ('done' in e) startedAt.delete(e.done)
      }
      for (const [id, t] of startedAt) {
        if (Date.now() - t <= HANG_MS || hung !== undefined) continue
        hung = id
        try {
          process.kill(-child.pid!, 'SIGKILL')
        } catch {
          // gone already
        }
      }
    }, 250)
    await exited
    clearInterval(watch)
    const events = readResults(results)
    const opens = parseTrace(fs.existsSync(trace) ? fs.readFileSync(trace, 'utf8') : '')
    let unfinished: number | undefined
    for (const e of events) {
      if ('start' in e) unfinished = e.start
      if (!('done' in e)) continue
      unfinished = undefined
      const c = byId.get(e.done)!
      let v = judge(c, e, built)
      const esc = escape(opens.get(c.id) ?? [], path.join(built.work, `case-${c.id}`), built.bait)
      if (!v.failure && esc) v = { ...v, failure: esc }
      if (v.failure) v.failure += `\n    ops: ${JSON.stringify(c.ops)}\n    log: ${e.logs.join(' | ').slice(0, 1500)}`
      if (!opens.has(c.id) && !v.failure) v = { ...v, failure: 'no trace of its opens (strace did not record the case)' }
      verdicts.set(c.id, v)
    }
    if (unfinished !== undefined) {
      const c = byId.get(unfinished)!
      verdicts.set(c.id, { id: c.id, classes: c.classes, outcome: hung === unfinished ? 'hang' : 'crash', failure: hung === unfinished ? `restore still running after ${HANG_MS / 1000} s` : `the driver died: ${stderr.trim()}` })
      fs.rmSync(path.join(built.work, `case-${c.id}`), { recursive: true, force: true })
    } else if (events.filter((e) => 'done' in e).length < rest.length && !hung) {
      // Died before starting the next case: nothing to blame a case for, but say so.
      throw new Error(`fuzz driver ${tag} exited early: ${stderr}`)
    }
    const finished = new Set(verdicts.keys())
    rest = rest.filter((c) => !finished.has(c.id))
    for (const f of [planFile, results, trace]) fs.rmSync(f, { force: true })
    if (attempt > 50) throw new Error('fuzz: more than 50 driver restarts')
  }
}

/** New complete lines of a growing JSON-lines file. */
class Tail {
  private offset = 0
  private partial = ''
  constructor(private readonly file: string) {}
  read(): any[] {
    let fd: number
    try {
      fd = fs.openSync(this.file, 'r')
    } catch {
      return []
    }
    try {
      const size = fs.fstatSync(fd).size
      if (size <= this.offset) return []
      const b = Buffer.alloc(size - this.offset)
      fs.readSync(fd, b, 0, b.length, this.offset)
      this.offset = size
      const lines = (this.partial + b.toString('utf8')).split('\n')
      this.partial = lines.pop()!
      return lines.map((l) => JSON.parse(l))
    } finally {
      fs.closeSync(fd)
    }
  }
}

function readResults(file: string): any[] {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch {
    return []
  }
  return text
    .split('\n')
    .filter((l) => l.endsWith('}'))
    .map((l) => {
      try {
        return JSON.parse(l)
      } catch {
        return {}
      }
    })
}

/** Figures of a run: cases per class and per outcome, failures. */
export function figures(verdicts: Verdict[]): { classes: Record<string, number>; outcomes: Record<string, number>; failures: number } {
  const classes: Record<string, number> = {}
  const outcomes: Record<string, number> = {}
  for (const v of verdicts) {
    for (const c of v.classes) classes[c] = (classes[c] ?? 0) + 1
    const o = v.failure ? `FAILED (${v.outcome})` : v.outcome
    outcomes[o] = (outcomes[o] ?? 0) + 1
  }
  return { classes, outcomes, failures: verdicts.filter((v) => v.failure).length }
}
