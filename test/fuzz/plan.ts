/**
 * Seeded mutations of a state dir, for the fuzz (test/fuzz.test.ts). A case
 * is a list of plain operations (test/fuzz/driver.mjs applies them to a copy
 * of the base state dir) and the forgeries among them that are *valid*: a
 * record rewritten with values restore must accept, and a recomputed CRC (the
 * CRC finds damage, it does not authenticate). A valid forgery changes what
 * the oracle expects of its generation: it restores as forged.
 *
 * Everything here is a pure function of (seed, case index) and the base's
 * description, so one case can be replayed alone (`SHMKEEP_FUZZ_CASE`).
 */

/** A mutation, as the driver applies it (paths relative to the state dir). */
export type Op =
  | { op: 'flip'; file: string; at: number; xor: number }
  | { op: 'truncate'; file: string; fraction: number }
  | { op: 'extend'; file: string; bytes: number; sparse: boolean; seed: number }
  | { op: 'rm'; file: string }
  | { op: 'symlink'; file: string; target: string; relative: boolean }
  | { op: 'mkdir'; file: string }
  | { op: 'mkfifo'; file: string }
  | { op: 'chmod'; file: string; mode: number }
  | { op: 'chown'; file: string; uid: number; gid: number }
  | {
      op: 'forge'
      file: string
      /** JSON path; an element `key=0x…` is the list element with that key. */
      path: Array<string | number>
      value?: unknown
      remove?: boolean
      splice?: boolean
      /** Another format number in the header. */
      format?: number
      /** Set one byte (4: type, 5–7: reserved) of one entry of the chunk table at `path`. */
      table?: { chunk: number; byte: number; value: number | 'flip-type' }
    }

/** One object as the kernel shows it (test/fuzz/driver.mjs `fingerprint`). */
export interface Obj {
  kind: 'shm' | 'sem' | 'msg'
  key: string
  id: number
  size?: number
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
  nsems?: number
  qbytes?: number
  qnum?: number
  hash: string
}

/** What a valid forgery does to its generation's expected objects. */
export type Effect =
  | { gen: string; kind: Obj['kind']; key: string; id: number; set: Partial<Obj> }
  | { gen: string; kind: Obj['kind']; key: string; id: number; drop: true }
  | { gen: string; dropKinds: Array<Obj['kind']> }

export interface Case {
  id: number
  /** Mutation classes, for the figures. */
  classes: string[]
  ops: Op[]
  effects: Effect[]
}

/** The base state dir as the planner sees it. */
export interface Base {
  /** Every file and directory, relative, with its type and size. */
  entries: Array<{ rel: string; dir: boolean; size: number }>
  /** Parsed checked JSON files (GENERATION, .meta), by relative path. */
  json: Record<string, any>
  generations: string[]
}

/** splitmix32: small, fast, good enough to pick mutations. */
export function rng(seed: number, index: number): () => number {
  let s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0
  return () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32
  }
}

type R = () => number
const int = (r: R, n: number) => Math.floor(r() * n)
const pick = <T>(r: R, list: readonly T[]): T => list[int(r, list.length)]!

/** Values no record may hold (each must be refused, or ignored where the field does not matter). */
const INVALID: unknown[] = [-1, 1.5, 4294967295, 2 ** 40, -(2 ** 31), 1e308, null, '0', '', true, false, [], {}, [1], 'gen-000000000001', 0x7fffffff + 1, '0x5a0f0001', 0o777 + 1]

/** A key of our own range that the base does not use. */
const freshKey = (r: R) => '0x6b' + int(r, 0xffffff).toString(16).padStart(6, '0')
/** An id whose index (id % 32768) no base object uses: the kernel can give it back exactly. */
const freshId = (r: R) => 200 + int(r, 30000) + 32768 * int(r, 60000)
const idValue = (r: R) => pick(r, [0, 1000, 4242, 65534, 4294967294])

/** Fields the kernel's view shows: a value restore accepts must come back exactly (anything else it must refuse). */
const VISIBLE = new Set(['key', 'id', 'mode', 'uid', 'gid', 'cuid', 'cgid'])

/** Valid values for the fields whose forgery shows in the kernel's view. */
const VALID: Record<string, (r: R) => unknown> = {
  mode: (r) => int(r, 0o1000),
  uid: idValue,
  gid: idValue,
  cuid: idValue,
  cgid: idValue,
}

interface RecordPlace {
  gen: string
  kind: Obj['kind']
  /** Where the record is: file and path; for a segment with a .meta, the GENERATION entry too. */
  file: string
  path: Array<string | number>
  entry?: { file: string; path: Array<string | number> }
  record: any
}

function records(base: Base): RecordPlace[] {
  const out: RecordPlace[] = []
  for (const gen of base.generations) {
    const file = `${gen}/GENERATION`
    const g = base.json[file]
    if (!g) continue
    g.segments.forEach((s: any, i: number) => {
      if (s.packed) out.push({ gen, kind: 'shm', file, path: ['segments', i, 'packed'], entry: { file, path: ['segments', i] }, record: s.packed })
      else if (base.json[`${gen}/${s.meta}`]) out.push({ gen, kind: 'shm', file: `${gen}/${s.meta}`, path: [], entry: { file, path: ['segments', i] }, record: base.json[`${gen}/${s.meta}`] })
    })
    g.objects?.records.forEach((o: any, i: number) => out.push({ gen, kind: o.kind, file, path: ['objects', 'records', i], record: o }))
  }
  return out
}

/** A forgery of one record's field: valid (with its effect) or not. */
function forge(r: R, base: Base): { ops: Op[]; effects: Effect[]; cls: string } {
  const places = records(base)
  const p = pick(r, places)
  const who = { gen: p.gen, kind: p.kind, key: p.record.key as string, id: p.record.id as number }
  const at = (field: string | number, value: unknown, remove = false): Op => ({ op: 'forge', file: p.file, path: [...p.path, field], value, remove })
  const roll = r()
  if (roll < 0.4) {
    // A valid new value of an attribute the kernel shows.
    const field = pick(r, Object.keys(VALID))
    const value = VALID[field]!(r) as number
    return { ops: [at(field, value)], effects: [{ ...who, set: { [field]: value } }], cls: 'forge-valid' }
  }
  if (roll < 0.5) {
    // A valid new key or id, in every place the record is named (entry and .meta).
    const field = r() < 0.5 ? 'key' : 'id'
    const value = field === 'key' ? (r() < 0.1 ? '0x00000000' : freshKey(r)) : freshId(r)
    const ops = [at(field, value)]
    if (p.entry && p.kind === 'shm') ops.push({ op: 'forge', file: p.entry.file, path: [...p.entry.path, field], value })
    return { ops, effects: [{ ...who, set: { [field]: value } as Partial<Obj> }], cls: 'forge-valid' }
  }
  if (roll < 0.55 && p.kind === 'msg') {
    const value = pick(r, [1024, 16384, 65536, 100000, 0, 10])
    return { ops: [at('attrs', { ...p.record.attrs, qbytes: value })], effects: value >= p.record.attrs.cbytes && value > 0 ? [{ ...who, set: { qbytes: value } }] : [], cls: 'forge-valid' }
  }
  if (roll < 0.6) {
    // The record left out of its generation: valid, the object is not restored.
    const list = p.kind === 'shm' ? { file: p.entry!.file, path: p.entry!.path } : { file: p.file, path: p.path }
    return { ops: [{ op: 'forge', file: list.file, path: list.path, splice: true }], effects: [{ ...who, drop: true }], cls: 'forge-valid' }
  }
  if (roll < 0.63) {
    const file = `${p.gen}/GENERATION`
    if (r() < 0.5) return { ops: [{ op: 'forge', file, path: ['objects'], remove: true }], effects: [{ gen: p.gen, dropKinds: ['sem', 'msg'] }], cls: 'forge-valid' }
    // A checkpoint's semaphore sets are skipped by default (docs/FORMAT.md).
    return { ops: [{ op: 'forge', file, path: ['objects', 'checkpoint'], value: true }], effects: [{ gen: p.gen, dropKinds: ['sem'] }], cls: 'forge-valid' }
  }
  if (roll < 0.7 && p.kind === 'shm') {
    // The chunk table: a data chunk typed zero (its CRC is then not the CRC
    // of zeros), an unknown type, reserved bytes set.
    const chunk = int(r, Buffer.from(p.record.chunks, 'base64').length / 8)
    const how = int(r, 3)
    const table = how === 0 ? { chunk, byte: 4, value: 'flip-type' as const } : how === 1 ? { chunk, byte: 4, value: 2 + int(r, 254) } : { chunk, byte: 5 + int(r, 3), value: 1 + int(r, 255) }
    return { ops: [{ op: 'forge', file: p.file, path: [...p.path, 'chunks'], table }], effects: [], cls: 'forge-table' }
  }
  if (roll < 0.8) {
    // Any field of a record, top-level GENERATION fields included, set to a value no record may hold (or removed).
    const gen = pick(r, base.generations)
    const g = base.json[`${gen}/GENERATION`]
    if (g && r() < 0.3) {
      const field = pick(r, Object.keys(g))
      return { ops: [{ op: 'forge', file: `${gen}/GENERATION`, path: [field], value: pick(r, INVALID), remove: r() < 0.2 }], effects: [], cls: 'forge-invalid' }
    }
  }
  const keys = Object.keys(p.record)
  const field = pick(r, keys)
  const inner = p.record[field]
  if (inner && typeof inner === 'object' && !Array.isArray(inner) && Object.keys(inner).length && r() < 0.5) {
    const sub = pick(r, Object.keys(inner))
    const value = pick(r, INVALID)
    const effects: Effect[] = p.kind === 'msg' && field === 'attrs' && sub === 'qbytes' ? [{ ...who, set: { qbytes: value as number } }] : []
    return { ops: [{ op: 'forge', file: p.file, path: [...p.path, field, sub], value }], effects, cls: 'forge-invalid' }
  }
  const value = pick(r, INVALID)
  const remove = r() < 0.15
  // Accepted, a value must show as it is: a coerced one (1.5 as 1, "0" as 0) is a failure.
  const effects: Effect[] = VISIBLE.has(field) && !remove ? [{ ...who, set: { [field]: value } as Partial<Obj> }] : []
  return { ops: [at(field, value, remove)], effects, cls: 'forge-invalid' }
}

/** Files a mutation may hit; data and metadata files more often than the rest. */
function target(r: R, base: Base, { files = true, dirs = false } = {}): string {
  const list = base.entries.filter((e) => (e.dir ? dirs : files))
  const weighted = list.flatMap((e) => (/GENERATION|\.meta$|\.data$|CURRENT/.test(e.rel) ? [e, e, e] : [e]))
  return pick(r, weighted).rel
}

/** Names that are not in the base but that shmkeep reads or cleans up when present. */
const PLANTED = ['RESTORING', 'CURRENT.tmp', 'LIVE', 'RESTORING.tmp', '.tmp-gen-000000000009', 'gen-000000000009', 'quarantine-gen-000000000002']

function one(r: R, base: Base): { ops: Op[]; effects: Effect[]; cls: string } {
  const roll = r()
  const size = (rel: string) => base.entries.find((e) => e.rel === rel)?.size ?? 0
  if (roll < 0.2) {
    // Half the flips in a file's first 8 KiB: the 64 MiB segment's data file is mostly holes (zero chunks are never read).
    const file = target(r, base)
    const at = int(r, Math.max(1, r() < 0.5 ? Math.min(8192, size(file)) : size(file)))
    return { ops: [{ op: 'flip', file, at, xor: 1 + int(r, 255) }], effects: [], cls: 'flip' }
  }
  if (roll < 0.27) return { ops: [{ op: 'truncate', file: target(r, base), fraction: pick(r, [0, 0.5, 0.999, r()]) }], effects: [], cls: 'truncate' }
  if (roll < 0.32) return { ops: [{ op: 'extend', file: target(r, base), bytes: pick(r, [1, 4096, 1 << 20]), sparse: r() < 0.5, seed: int(r, 1e9) }], effects: [], cls: 'extend' }
  if (roll < 0.4) return { ops: [{ op: 'rm', file: target(r, base, { dirs: r() < 0.2 }) }], effects: [], cls: 'delete' }
  if (roll < 0.52) {
    // A link out of the state dir: to an intact copy of the same file or
    // directory (following it would restore silently), to a FIFO, or to a directory.
    const planted = r() < 0.2
    const file = planted ? pick(r, PLANTED) : target(r, base, { dirs: r() < 0.25 })
    const to = pick(r, ['same', 'same', 'fifo', 'dir', 'state'])
    const intact = base.entries.some((e) => e.rel === file) ? `state/${file}` : 'state/gen-000000000002'
    const targetPath = to === 'same' ? intact : to === 'fifo' ? 'fifo' : to === 'dir' ? 'state/gen-000000000001' : 'state'
    return { ops: [{ op: 'symlink', file, target: targetPath, relative: r() < 0.5 }], effects: [], cls: 'symlink' }
  }
  if (roll < 0.58) return { ops: [{ op: 'mkdir', file: r() < 0.2 ? pick(r, PLANTED) : target(r, base) }], effects: [], cls: 'directory' }
  if (roll < 0.64) return { ops: [{ op: 'mkfifo', file: r() < 0.2 ? pick(r, PLANTED) : target(r, base, { dirs: r() < 0.15 }) }], effects: [], cls: 'fifo' }
  if (roll < 0.72) {
    const file = r() < 0.15 ? '.' : target(r, base, { dirs: r() < 0.3 })
    if (r() < 0.7) return { ops: [{ op: 'chmod', file, mode: pick(r, [0, 0o200, 0o777, 0o666, 0o640, 0o660, 0o2775, 0o1777, 0o604]) }], effects: [], cls: 'mode' }
    return { ops: [{ op: 'chown', file, uid: pick(r, [1000, 0, 65534]), gid: pick(r, [1000, 0, 65534]) }], effects: [], cls: 'mode' }
  }
  if (roll < 0.75) {
    // Another format number in a header, CRC correct.
    const file = pick(r, Object.keys(base.json))
    return { ops: [{ op: 'forge', file, path: ['format'], value: base.json[file].format, format: pick(r, [0, 1, 3, 99]) }], effects: [], cls: 'forge-invalid' }
  }
  return forge(r, base)
}

/** Case `index` of the run with `seed`: one mutation most often, up to three. */
export function planCase(seed: number, index: number, base: Base): Case {
  const r = rng(seed, index)
  const n = r() < 0.7 ? 1 : 2 + int(r, 2)
  const c: Case = { id: index, classes: [], ops: [], effects: [] }
  const forges: Op[] = []
  const others: Op[] = []
  for (let k = 0; k < n; k++) {
    const m = one(r, base)
    c.classes.push(m.cls)
    for (const op of m.ops) (op.op === 'forge' ? forges : others).push(op)
    c.effects.push(...m.effects)
  }
  // Forgeries first (they rewrite a file whole, from what is there), records
  // left out last and from the end (the paths of the others stay right).
  const seen = new Set<string>()
  const splices = forges.filter((op) => op.op === 'forge' && op.splice && !seen.has(`${op.file} ${op.path}`) && seen.add(`${op.file} ${op.path}`)).sort((a, b) => Number((b as { path: number[] }).path.at(-1)) - Number((a as { path: number[] }).path.at(-1)))
  c.ops = [...forges.filter((op) => !(op.op === 'forge' && op.splice)), ...splices, ...others]
  return c
}

/** A number as digits, anything else as JSON (so a string "0" never equals 0). */
const n = (v: unknown, radix = 10) => (typeof v === 'number' ? v.toString(radix) : JSON.stringify(v) ?? 'undefined')

/** A canonical line per object, for comparing namespaces as sets. */
export function line(o: Obj): string {
  const key = typeof o.key === 'string' ? o.key : JSON.stringify(o.key)
  return [o.kind, key, `id=${n(o.id)}`, `size=${n(o.size)}`, `mode=${n(o.mode, 8)}`, `uid=${n(o.uid)}:${n(o.gid)}`, `cuid=${n(o.cuid)}:${n(o.cgid)}`, `nsems=${n(o.nsems)}`, `qbytes=${n(o.qbytes)}`, o.hash].join(' ')
}

/** What restoring `gen` of this case must give: the generation as saved, with the case's valid forgeries applied. */
export function expected(gen: string, saved: Obj[], effects: Effect[]): string[] {
  // Effects name objects as saved (a renamed one keeps its original name here).
  let objs = saved.map((o) => ({ was: `${o.kind} ${o.key} ${o.id}`, o: { ...o } }))
  for (const e of effects) {
    if (e.gen !== gen) continue
    if ('dropKinds' in e) objs = objs.filter((x) => !e.dropKinds.includes(x.o.kind))
    else {
      const x = objs.find((y) => y.was === `${e.kind} ${e.key} ${e.id}`)
      if (!x) continue // dropped by an earlier forgery
      if ('drop' in e) objs = objs.filter((y) => y !== x)
      else x.o = { ...x.o, ...e.set }
    }
  }
  return objs.map((x) => line(x.o)).sort()
}
