/**
 * Snapshot, restore, verification and listing of the IPC kinds other than
 * segments (semaphore sets, SysV message queues, POSIX shm objects, POSIX
 * message queues), written once over every kind: each kind
 * module says how its objects are listed, read, checked and recreated
 * (src/kinds/kind.ts); this module decides which objects, where their bytes
 * go, what a failure costs, and in which order things happen.
 *
 * On disk (docs/FORMAT.md): GENERATION's `objects` section lists every saved
 * object (kind, key, id, attributes, offset/length/CRC-32C of its contents)
 * and the objects that could not be saved; the contents of all of them are
 * one packed file, `objects.data`, written with the generation's other files
 * (fsynced before GENERATION).
 */
import fs from 'node:fs'
import path from 'node:path'
import { hasCode } from '../errors'
import { containerDevShm, kindSelected, parseKinds, segmentPredicate, type SegmentFilter } from '../filter'
import { creatorIdentity, readIdentity, SELF, type Identity, type Powers } from '../identity'
import { formatKey, parseKey } from '../keys'
import { humanSize, type Logger } from '../log'
import { native } from '../native'
import { StateFileError, readRegularFile } from '../state/files'
import { CAP, effectiveCapabilities, hasCapability, nextIdControl } from '../system'
import { CONTAINER_ONLY_KINDS, describe, type DiffStatus, identityOf, NAMED_KINDS, recordIdentity, type IpcObject, type Kind, type KindName, type ObjectPerm, type ObjectRecord, type Payload, type PayloadSink } from './kind'
import { mqueueKind } from './mqueue'
import { msgKind } from './msg'
import { posixShmKind } from './posixshm'
import { semKind } from './sem'
import { listShm } from './shm'

export { KIND_NAMES, type DiffStatus, type KindName, type IpcObject, type ObjectRecord, type Payload } from './kind'
export { kindSelected, parseKinds }

/** The kinds saved through the packed data file, in the order they are restored. */
export const SMALL_KINDS: ReadonlyArray<Kind> = [semKind as Kind, msgKind as Kind, mqueueKind as Kind, posixShmKind as Kind]
const byName = new Map(SMALL_KINDS.map((k) => [k.name, k]))

/** The packed data file of a generation. */
export const OBJECTS_DATA = 'objects.data'

/**
 * The key and owner filters over objects of any kind. Size filters speak of
 * segments: they do not apply to the other kinds; key filters speak of SysV
 * objects: POSIX objects have names, and only owners filter them.
 */
export function objectPredicate(filter: SegmentFilter = {}): (o: IpcObject) => boolean {
  const keysAndOwners = segmentPredicate({ keys: filter.keys, excludeKeys: filter.excludeKeys, owners: filter.owners })
  const owners = segmentPredicate({ owners: filter.owners })
  return (o) => kindSelected(filter, o.kind) && (NAMED_KINDS.has(o.kind) ? owners : keysAndOwners)({ key: o.key, uid: o.uid, size: o.bytes } as Parameters<typeof keysAndOwners>[0])
}

/**
 * Every live IPC object of this namespace that the filter takes, all kinds,
 * by kind then key; `notes` say what could not be listed and what was skipped.
 */
export function liveObjects(filter: SegmentFilter = {}): { objects: IpcObject[]; complete: boolean; notes: string[] } {
  const take = objectPredicate(filter)
  let complete = true
  const objects: IpcObject[] = []
  const notes: string[] = []
  const lists = [{ name: 'shm' as const, list: listShm }, ...SMALL_KINDS.map((k) => ({ name: k.name, list: () => k.list() }))]
  for (const { name, list } of lists) {
    if (!kindSelected(filter, name)) continue
    const l: ReturnType<Kind['list']> = list()
    complete &&= l.complete
    if (l.unavailable && asked(filter, name)) notes.push(l.unavailable) // named in --kind: say why nothing is listed
    if (l.skipped?.length) notes.push(`${name}: not objects, skipped: ${l.skipped.join(', ')}`)
    objects.push(...l.objects.filter(take))
  }
  return { objects, complete, notes }
}

/** An object the snapshot could not save, and why (the generation says so; nothing claims it saved). */
export interface UnsavedObject extends ObjectPerm {
  errno: string
  reason: string
}

/** GENERATION's `objects` section. */
export interface ObjectsSection {
  /** The packed data file (in the generation's directory) and its size. */
  data: string
  bytes: number
  /** The kinds looked at (a `--kind` filter leaves some out on purpose). */
  kinds: KindName[]
  records: ObjectRecord[]
  unsaved: UnsavedObject[]
  /** The namespace's limits when saved, per kind (compared at restore). */
  limits: Partial<Record<KindName, Record<string, number>>>
  /**
   * Taken by a checkpoint while the app ran: a semaphore value may be a lock
   * held by a process that a SIGKILL then killed (the kernel would have
   * undone its SEM_UNDO adjustment; a restored value keeps it held).
   */
  checkpoint: boolean
}

export type ObjectSaveStatus = 'saved' | 'vanished' | 'unsaved'

export interface ObjectOutcome {
  kind: KindName
  key: string
  id: number
  status: ObjectSaveStatus
  reason?: string
  /** Who it was read as, when shmkeep switched identity. */
  readAs?: string
  bytes: number
}

/** Whether `--kind` names this kind (not only the default of every kind). */
function asked(filter: SegmentFilter | undefined, kind: KindName): boolean {
  return filter?.kinds !== undefined && parseKinds(filter.kinds).includes(kind)
}

/**
 * Whether a kind whose reading disturbs its objects (POSIX queues) is read by
 * this snapshot: at the final one (the app has exited), or when `--kind` names
 * it (the operator says the app is gone); never at a checkpoint.
 */
function takenNow(kind: Kind, o: SaveObjectsOptions): boolean {
  if (o.checkpoint) return false
  return o.final === true || asked(o.filter, kind.name)
}

function perm(o: IpcObject): ObjectPerm {
  return { kind: o.kind, key: NAMED_KINDS.has(o.kind) ? o.name! : formatKey(o.key), id: o.id, mode: o.mode, uid: o.uid, gid: o.gid, cuid: o.cuid, cgid: o.cgid }
}

export interface SaveObjectsOptions {
  filter?: SegmentFilter
  /** The snapshot is a checkpoint of a running app (see {@link ObjectsSection.checkpoint}). */
  checkpoint?: boolean
  /** The final snapshot of `run` (the app has exited): POSIX queues are saved only then, or when `--kind` names them. */
  final?: boolean
  powers: Powers
  log: Logger
}

/**
 * Read every object of the small kinds that the filter takes and write their
 * contents into `objects.data` through `out` (the generation being written:
 * it fsyncs the file before GENERATION). One object that cannot be read is
 * recorded unsaved and costs none of the others. No object at all: no file
 * and no section (the generation is as one of segments only).
 */
export function saveObjects(out: { create(file: string): number }, options: SaveObjectsOptions): { section: ObjectsSection | undefined; outcomes: ObjectOutcome[] } {
  const take = objectPredicate(options.filter)
  const kinds = SMALL_KINDS.filter((k) => kindSelected(options.filter, k.name) && (!k.finalOnly || takenNow(k, options)))
  const records: ObjectRecord[] = []
  const unsaved: UnsavedObject[] = []
  const outcomes: ObjectOutcome[] = []
  const limits: ObjectsSection['limits'] = {}
  const packed = new PackedWriter(out)
  if (options.filter?.kinds === undefined && process.pid === 1 && !kindSelected(options.filter, 'posix-shm')) {
    options.log.log('info', 'snapshot.posix-shm', `POSIX shm objects not saved: ${containerDevShm().why} (filter.kinds: 'all' takes them)`)
  }
  for (const kind of kinds) {
    limits[kind.name] = kind.limits()
    const { objects, complete, unavailable, skipped, where } = kind.list()
    if (unavailable) {
      // Asked for by name, or a kind of the IPC namespace: say so loudly; the host-only kinds quietly.
      options.log.log(asked(options.filter, kind.name) || !CONTAINER_ONLY_KINDS.has(kind.name) ? 'warn' : 'info', 'snapshot.unavailable', unavailable, { kind: kind.name })
      continue
    }
    if (!complete) options.log.log('warn', 'snapshot.incomplete', `this kernel lists only the ${kind.noun}s shmkeep may read (no ${kind.name.toUpperCase()}_STAT_ANY, Linux < 4.17): others are not saved`)
    if (where) options.log.log('info', 'snapshot.where', `${kind.noun}s from ${where}`, { kind: kind.name })
    if (skipped?.length) options.log.log('warn', 'snapshot.skipped', `${kind.noun}s: not saved, not regular files: ${skipped.join(', ')}`, { kind: kind.name })
    for (const o of objects.filter(take)) {
      const p = perm(o)
      const who = kind.readAs ? kind.readAs(o, options.powers) : readIdentity(o, options.powers)
      if ('error' in who) {
        unsaved.push({ ...p, errno: 'EACCES', reason: who.error })
        outcomes.push({ kind: o.kind, key: p.key, id: o.id, status: 'unsaved', reason: who.error, bytes: 0 })
        continue
      }
      const start = packed.begin()
      const r = kind.read(o, who, packed)
      const readAs = who.uid >= 0 ? `uid ${who.uid} gid ${who.gid}` : undefined
      if ('unsaved' in r) {
        packed.restart()
        if (r.errno === 'EIDRM') {
          outcomes.push({ kind: o.kind, key: p.key, id: o.id, status: 'vanished', reason: 'removed while the snapshot ran', bytes: 0 })
          continue
        }
        unsaved.push({ ...p, errno: r.errno ?? 'EIO', reason: r.unsaved })
        outcomes.push({ kind: o.kind, key: p.key, id: o.id, status: 'unsaved', reason: r.unsaved, readAs, bytes: 0 })
        options.log.log('error', 'snapshot.unsaved', `${describe(p)} not saved: ${r.unsaved}`, { kind: o.kind, key: p.key })
        continue
      }
      if ('payload' in r) packed.write(r.payload)
      const length = packed.offset - start
      records.push({ ...p, offset: start, length, crc32c: hex(packed.crc), attrs: r.attrs, info: r.info })
      outcomes.push({ kind: o.kind, key: p.key, id: o.id, status: 'saved', readAs, bytes: length })
    }
  }
  if (records.length === 0 && unsaved.length === 0) return { section: undefined, outcomes }
  const bytes = packed.finish()
  return {
    section: { data: OBJECTS_DATA, bytes, kinds: kinds.map((k) => k.name), records, unsaved, limits, checkpoint: options.checkpoint ?? false },
    outcomes,
  }
}

function crcHex(b: Uint8Array): string {
  return hex(native.crc32c(b))
}

function hex(crc: number): string {
  return crc.toString(16).padStart(8, '0')
}

/** Bytes gathered before one write of the packed file; a piece this large goes straight to the file. */
const GATHER = 1 << 20

/**
 * The packed data file as it is written: each object's bytes appended (the
 * CRC-32C of the current object computed as they come), small payloads
 * gathered into writes of about {@link GATHER} bytes (thousands of objects,
 * a few system calls), large pieces written at once and never kept (a 1 GiB
 * POSIX object costs one piece of memory). The file is created at the first
 * write: no object, no file.
 */
class PackedWriter implements PayloadSink {
  /** The CRC-32C of the current object's bytes so far. */
  crc = 0
  private fd = -1
  private written = 0
  private pending: Buffer[] = []
  private pendingBytes = 0
  private start = 0

  constructor(private readonly out: { create(file: string): number }) {}

  /** Where the next byte goes. */
  get offset(): number {
    return this.written + this.pendingBytes
  }

  /** A new object starts here; returns its offset. */
  begin(): number {
    this.start = this.offset
    this.crc = 0
    return this.start
  }

  write(bytes: Uint8Array): void {
    if (bytes.length === 0) return
    this.crc = native.crc32c(bytes, this.crc)
    if (bytes.length >= GATHER) {
      this.flush()
      this.put(bytes)
      return
    }
    this.pending.push(Buffer.from(bytes)) // a copy: a streaming kind reuses its buffer
    this.pendingBytes += bytes.length
    if (this.pendingBytes >= GATHER) this.flush()
  }

  /** Drop the current object's bytes (its read starts again, or it is not saved). */
  restart(): void {
    this.crc = 0
    if (this.start >= this.written) {
      const keep = Buffer.concat(this.pending, this.pendingBytes).subarray(0, this.start - this.written)
      this.pending = keep.length ? [keep] : []
      this.pendingBytes = keep.length
      return
    }
    fs.ftruncateSync(this.fd, this.start)
    this.written = this.start
    this.pending = []
    this.pendingBytes = 0
  }

  /** Everything written (the file exists, possibly empty); returns its size. */
  finish(): number {
    this.flush()
    if (this.fd < 0) this.fd = this.out.create(OBJECTS_DATA)
    return this.written
  }

  private flush(): void {
    if (this.pendingBytes === 0) return
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes)
    this.pending = []
    this.pendingBytes = 0
    this.put(data)
  }

  private put(data: Uint8Array): void {
    if (this.fd < 0) this.fd = this.out.create(OBJECTS_DATA)
    let done = 0
    while (done < data.length) done += fs.writeSync(this.fd, data, done, data.length - done, this.written + done)
    this.written += data.length
  }
}

/** The saved objects' data is damaged or unreadable: another generation may do. */
export class ObjectDamage extends Error {}

/** A packed data file up to this size is read whole (one read for thousands of small objects). */
const READ_WHOLE = 16 << 20
/** Bytes of one piece of a large object read from the packed file. */
const PIECE = 4 << 20

/**
 * A large object's bytes in the packed data file, read piece by piece when
 * they are used (a restore writes a POSIX object's data runs from here): its
 * CRC-32C is checked by {@link readObjects} before anything is created. A
 * piece up to {@link PIECE} bytes is read into one buffer kept for the
 * purpose: it is valid until the next call (every caller uses a piece at
 * once), and a restore's memory stays flat whatever the object's size.
 */
class FileBytes implements Payload {
  private piece: Buffer | undefined

  constructor(
    private readonly file: string,
    private readonly at: number,
    readonly length: number,
  ) {}

  subarray(start: number, end: number): Buffer {
    const from = Math.max(0, Math.min(start, this.length))
    const to = Math.max(from, Math.min(end, this.length))
    const out = to - from <= PIECE ? (this.piece ??= Buffer.allocUnsafe(PIECE)).subarray(0, to - from) : Buffer.allocUnsafe(to - from)
    const fd = fs.openSync(this.file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
    try {
      let done = 0
      while (done < out.length) {
        const n = fs.readSync(fd, out, done, out.length - done, this.at + from + done)
        if (n === 0) throw new ObjectDamage(`${path.basename(this.file)} is shorter than when it was verified`)
        done += n
      }
    } finally {
      fs.closeSync(fd)
    }
    return out
  }
}

/** The CRC-32C of a payload, read piece by piece. */
function payloadCrc(p: Payload): number {
  if (Buffer.isBuffer(p)) return native.crc32c(p)
  let crc = 0
  for (let at = 0; at < p.length; at += PIECE) crc = native.crc32c(p.subarray(at, at + PIECE), crc)
  return crc
}

/**
 * Every record's contents in the packed data file: a file up to
 * {@link READ_WHOLE} is read whole; in a larger one, the objects of kinds
 * that stream (POSIX shm) larger than a piece stay in the file
 * ({@link FileBytes}) and the rest is read object by object.
 */
function payloadsOf(file: string, section: ObjectsSection): Payload[] {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  try {
    const st = fs.fstatSync(fd)
    if (!st.isFile()) throw new ObjectDamage(`${section.data} is not a regular file`)
    if (st.size !== section.bytes) throw new ObjectDamage(`${section.data} is ${st.size} bytes, ${section.bytes} were written`)
    const whole = st.size <= READ_WHOLE ? fs.readFileSync(fd) : undefined
    if (whole && whole.length !== section.bytes) throw new ObjectDamage(`${section.data} is ${whole.length} bytes, ${section.bytes} were written`)
    return section.records.map((rec) => {
      const length = Math.max(0, Math.min(rec.length, section.bytes - rec.offset))
      if (whole) return whole.subarray(rec.offset, rec.offset + length)
      if (byName.get(rec.kind)?.streams && length > PIECE) return new FileBytes(file, rec.offset, length)
      const b = Buffer.alloc(length)
      let done = 0
      while (done < length) {
        const n = fs.readSync(fd, b, done, length - done, rec.offset + done)
        if (n === 0) break
        done += n
      }
      return b
    })
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Read the packed data file and check every record against it (CRC and
 * structure); ObjectDamage naming each bad object. Large POSIX objects are
 * checked piece by piece and left in the file (never whole in memory).
 */
export function readObjects(dir: string, section: ObjectsSection): Payload[] {
  if (path.basename(section.data) !== section.data || section.data.startsWith('.')) throw new ObjectDamage(`objects data file name ${JSON.stringify(section.data)} is not a plain name`)
  let payloads: Payload[]
  try {
    payloads = payloadsOf(path.join(dir, section.data), section)
  } catch (e) {
    if (e instanceof ObjectDamage) throw e
    const code = (e as { code?: string }).code
    // Worded as the state dir's other files are (src/state/files.ts).
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ObjectDamage(`${section.data} is missing`)
    if (code === 'ELOOP') throw new ObjectDamage(`${section.data} is a symbolic link; shmkeep never follows links in the state dir`)
    if (code === 'EIO') throw new ObjectDamage(`${section.data}: ${(e as Error).message}`)
    throw e
  }
  const bad: string[] = []
  section.records.forEach((rec, i) => {
    const kind = byName.get(rec.kind)
    const payload = payloads[i]!
    if (!kind) bad.push(`${describe(rec)}: a kind this shmkeep does not know`)
    else if (rec.offset + rec.length > section.bytes || hex(payloadCrc(payload)) !== rec.crc32c) bad.push(`${describe(rec)}: its bytes in ${section.data} fail their checksum`)
    else {
      const wrong = kind.check(rec, payload)
      if (wrong) bad.push(`${describe(rec)}: ${wrong}`)
    }
  })
  if (bad.length) throw new ObjectDamage(bad.join('; '))
  return payloads
}

/** Verify a generation's objects: the bad ones, named. */
export function verifyObjects(dir: string, section: ObjectsSection | undefined): { ok: boolean; objects: number; bytes: number; problems: string[] } {
  if (!section) return { ok: true, objects: 0, bytes: 0, problems: [] }
  try {
    readObjects(dir, section)
    return { ok: true, objects: section.records.length, bytes: section.bytes, problems: [] }
  } catch (e) {
    if (!(e instanceof ObjectDamage)) throw e
    return { ok: false, objects: section.records.length, bytes: section.bytes, problems: e.message.split('; ') }
  }
}

/** What a restore does with semaphore sets a checkpoint saved. */
export type SemFromCheckpoint = 'restore' | 'skip'
/**
 * `skip`: a set saved by a checkpoint may hold a SEM_UNDO lock of a process
 * that a SIGKILL then killed; restored, the lock stays held by nobody and the
 * app hangs on it without a word. Left out, the app finds no set and creates
 * it afresh (most libraries do) or says that it is missing: an error that is
 * seen beats a deadlock that is not. Sets saved at a stop (the processes had
 * exited and the kernel had undone their adjustments) are always restored.
 */
export const DEFAULT_SEM_FROM_CHECKPOINT: SemFromCheckpoint = 'skip'

export type ObjectRestoreStatus = 'restored' | 'skipped' | 'not-restored'

export interface ObjectRestore {
  kind: KindName
  key: string
  savedId: number
  id?: number
  status: ObjectRestoreStatus
  reason?: string
  idKept?: boolean
  /** Attributes that could not be kept, and why. */
  notKept?: string
}

export interface ObjectRestoreOptions {
  onConflict: 'fail' | 'skip' | 'replace'
  semFromCheckpoint?: SemFromCheckpoint
  filter?: SegmentFilter
  powers: Powers
  log: Logger
}

/**
 * Restoring a generation's objects, in steps the restore of segments calls:
 * {@link planObjectRestore} reads and verifies everything and checks
 * conflicts and limits before anything is created; `create` makes every
 * object with its contents (mode 0600, as its creator); `finish` gives them
 * their saved mode and owner; `undo` removes what was created (and what it
 * replaced is gone: replacements come last).
 */
export class ObjectRestorePlan {
  readonly outcomes: ObjectRestore[] = []
  /** Ids not kept, per kind, and why. */
  readonly idsNotKept: string[] = []
  private readonly todo: Array<{ kind: Kind; rec: ObjectRecord; payload: Payload; out: ObjectRestore; replace?: IpcObject; as: Identity; notKept?: string }> = []
  private readonly created: Array<{ kind: Kind; id: number; key: string; as: Identity; label: string }> = []
  private readonly choose = new Map<KindName, boolean>()
  private readonly limitsNow = new Map<KindName, Record<string, number>>()

  constructor(
    private readonly section: ObjectsSection | undefined,
    payloads: Payload[],
    private readonly options: ObjectRestoreOptions,
  ) {
    if (!section) return
    const take = objectPredicate(options.filter)
    const policy = options.semFromCheckpoint ?? DEFAULT_SEM_FROM_CHECKPOINT
    const conflicts: string[] = []
    const problems: string[] = []
    for (const kind of SMALL_KINDS) {
      const recs = section.records.map((rec, i) => ({ rec, payload: payloads[i]! })).filter((x) => x.rec.kind === kind.name)
      if (recs.length === 0) continue
      // A kind left out (POSIX shm outside a container) is not even listed: never the host's /dev/shm.
      const listing = kindSelected(options.filter, kind.name) ? kind.list() : { objects: [], complete: true }
      if ('where' in listing && listing.where) options.log.log('info', 'restore.where', `${kind.noun}s into ${listing.where}`, { kind: kind.name })
      const live = new Map(listing.objects.map((o) => [identityOf(o), o]))
      const ids = kind.named ? ({ ok: true } as const) : nextIdControl(kind.name as 'sem' | 'msg')
      this.choose.set(kind.name, !kind.named && ids.ok)
      const chosen: ObjectRecord[] = []
      for (const { rec, payload } of recs) {
        const key = kind.named ? 0 : parseKey(rec.key)
        const out: ObjectRestore = { kind: kind.name, key: rec.key, savedId: rec.id, status: 'not-restored' }
        this.outcomes.push(out)
        if (!take({ ...rec, key, name: rec.key, ctime: 0, bytes: rec.length })) {
          out.status = 'skipped'
          out.reason = 'left out by the filter'
          continue
        }
        if (kind.name === 'sem' && section.checkpoint && policy === 'skip') {
          out.status = 'skipped'
          out.reason = "saved by a checkpoint while the app ran: its values may be locks of processes that are gone (semFromCheckpoint: 'restore' restores them)"
          continue
        }
        if (!kind.named && key === 0 && !ids.ok) {
          out.reason = `an IPC_PRIVATE ${kind.noun} can only be found again by its id, and ids cannot be kept here (${ids.reason})`
          continue
        }
        const existing = live.get(recordIdentity(rec))
        if (existing) {
          const here = kind.named ? 'exists here already' : `key exists here already (id ${existing.id})`
          if (options.onConflict === 'skip') {
            out.status = 'skipped'
            out.reason = here
            continue
          }
          if (options.onConflict === 'fail') conflicts.push(kind.named ? `${kind.noun} ${rec.key}` : `${kind.noun} ${rec.key} (id ${existing.id})`)
        }
        chosen.push(rec)
        this.todo.push({ kind, rec, payload, out, replace: existing, as: kind.createAs ? kind.createAs(rec, options.powers) : creatorIdentity(rec, options.powers) })
      }
      if (!ids.ok && chosen.length) this.idsNotKept.push(`${kind.name}: ${ids.reason}`)
      const fit = kind.fit(chosen, { powers: options.powers, log: options.log })
      problems.push(...fit.problems)
      for (const t of this.todo) if (fit.notKept.has(t.rec)) t.notKept = t.out.notKept = fit.notKept.get(t.rec)
      this.limitsNow.set(kind.name, kind.limits())
      this.compareLimits(kind)
    }
    const held = this.outcomes.filter((o) => o.status === 'skipped' && o.reason?.includes('checkpoint'))
    if (held.length) options.log.log('warn', 'restore.sem-checkpoint', `${held.length} semaphore set(s) not restored: saved by a checkpoint while the app ran, their values may be locks of processes that are gone (semFromCheckpoint: 'restore' restores them): ${held.map((o) => o.key).join(', ')}`)
    for (const o of this.outcomes) if (o.status === 'not-restored' && o.reason) options.log.log('warn', 'restore.object', `${describe({ ...o, id: o.savedId })} not restored: ${o.reason}`)
    if (conflicts.length) throw new Error(`these keys have objects here already: ${conflicts.join(', ')} (onConflict: 'skip' keeps them, onConflict: 'replace' replaces them)`)
    if (problems.length) throw new Error(`cannot restore: ${problems.join('; ')}`)
    // Replacements last: a failure before them leaves every live object alone.
    this.todo.sort((a, b) => Number(a.replace !== undefined) - Number(b.replace !== undefined))
  }

  /** One line when this namespace's limits are lower than the saved ones. */
  private compareLimits(kind: Kind): void {
    const saved = this.section?.limits[kind.name]
    const now = this.limitsNow.get(kind.name)
    if (!saved || !now) return
    const lower = Object.keys(saved).filter((k) => now[k] !== undefined && now[k]! < saved[k]!)
    if (lower.length) {
      this.options.log.log('warn', 'restore.limits', `this namespace's ${kind.name} limits are lower than where the generation was saved: ${lower.map((k) => `${k} ${now[k]} < ${saved[k]}`).join(', ')}`, { kind: kind.name })
    }
  }

  /** Keys of the objects this plan creates (for the RESTORING record). */
  get keys(): string[] {
    return this.todo.map((t) => `${t.kind.name}:${t.rec.key}`)
  }

  /** The objects created so far: kind and id. */
  get createdIds(): Array<{ kind: KindName; id: number }> {
    return this.created.map((c) => ({ kind: c.kind.name, id: c.id }))
  }

  /** Create every object with its contents, mode 0600. Throws at the first failure (undo removes what was made). */
  create(): void {
    const resource = hasCapability(CAP.SYS_RESOURCE, effectiveCapabilities())
    for (const t of this.todo) {
      if (t.replace) {
        t.kind.remove({ id: t.replace.id, key: t.replace.name ?? formatKey(t.replace.key) }, removerOf(t.kind, t.replace, this.options.powers))
        this.options.log.log('warn', 'restore.replace', `replaced the live ${describe(t.replace)} (onConflict: 'replace')`)
      }
      const label = describe(t.rec)
      let id: number
      try {
        id = t.kind.create(t.rec, t.payload, t.as, { chooseId: this.choose.get(t.kind.name) ?? false, limits: this.limitsNow.get(t.kind.name)!, resource })
      } catch (e) {
        throw Object.assign(new Error(`${label}: ${(e as Error).message}`), { code: (e as { code?: string }).code })
      }
      this.created.push({ kind: t.kind, id, key: t.rec.key, as: t.as, label })
      t.out.id = id
      if (t.kind.named) continue // a name, no id to keep
      t.out.idKept = id === t.rec.id
      if (parseKey(t.rec.key) === 0 && !t.out.idKept) throw new Error(`IPC_PRIVATE ${t.kind.noun} (saved id ${t.rec.id}) came back as id ${id}: that id is taken here, and the app could not find it`)
    }
  }

  /** Every object gets its saved mode and owner (only once everything is in place). */
  finish(): void {
    for (const t of this.todo) {
      t.kind.finish(t.rec, t.out.id!, t.as)
      t.out.status = 'restored'
      if (t.notKept) this.options.log.log('warn', 'restore.not-kept', `${describe(t.rec)}: ${t.notKept}`)
    }
    const moved = this.todo.filter((t) => !t.kind.named && !t.out.idKept)
    if (moved.length) {
      this.options.log.log('warn', 'restore.ids', `ids of semaphore sets/queues could not be kept (${this.idsNotKept.join('; ') || 'taken here'}): ${moved.map((t) => `${t.kind.name} ${t.rec.key} was id ${t.rec.id}, now ${t.out.id}`).join(', ')}. An app that stored ids must look them up by key.`)
    }
  }

  /** Remove every object created (after a failure anywhere in the restore). */
  undo(): void {
    for (const c of this.created.splice(0).reverse()) {
      try {
        c.kind.remove({ id: c.id, key: c.key }, c.kind.named ? SELF : c.as)
      } catch (e) {
        this.options.log.log('error', 'restore.undo', `could not remove ${c.label} (now id ${c.id}) after a failed restore: ${(e as Error).message}`)
      }
    }
    for (const o of this.outcomes) {
      if (o.status === 'restored' || o.id !== undefined) {
        o.status = 'not-restored'
        o.id = undefined
      }
    }
  }
}

/** Read, verify and plan the restore of a generation's objects (ObjectDamage for bad data, Error for conflicts and limits). */
export function planObjectRestore(dir: string, section: ObjectsSection | undefined, options: ObjectRestoreOptions): ObjectRestorePlan {
  const payloads = section ? readObjects(dir, section) : []
  return new ObjectRestorePlan(section, payloads, options)
}

/**
 * Objects that a restore killed in this namespace left behind: those of the
 * kinds and keys it was creating whose last change is not older than its
 * start (a set or queue has no creator pid to tell by). Removed.
 */
export function undoKilledObjects(record: { keys: string[]; startedAt: string; pid?: number; objects?: Array<{ kind: string; id: number }> }, powers: Powers, log: Logger): Array<{ kind: KindName; key: string; id: number }> {
  const removed: Array<{ kind: KindName; key: string; id: number }> = []
  const since = Math.floor(Date.parse(record.startedAt) / 1000)
  const keys = new Set(record.keys)
  const ids = new Set((record.objects ?? []).map((o) => `${o.kind}:${o.id}`))
  for (const kind of SMALL_KINDS) {
    // Only kinds the killed restore was creating: never a POSIX object of the host's /dev/shm by accident.
    if (!record.keys.some((k) => k.startsWith(`${kind.name}:`))) continue
    for (const name of kind.cleanup?.(record.pid) ?? []) removed.push({ kind: kind.name, key: name, id: 0 })
    for (const o of kind.list().objects) {
      const key = o.name ?? formatKey(o.key)
      const ours = ids.has(`${kind.name}:${o.id}`) || (keys.has(`${kind.name}:${key}`) && o.ctime >= since)
      if (!ours) continue
      try {
        kind.remove({ id: o.id, key }, removerOf(kind, o, powers))
        removed.push({ kind: kind.name, key, id: o.id })
      } catch (e) {
        log.log('warn', 'restore.cleanup', `could not remove ${describe(o)} left by a killed restore: ${(e as Error).message}`)
      }
    }
  }
  return removed
}

/** Who removes a live object: its creator for SysV kinds (root in Docker lacks CAP_IPC_OWNER), ourselves for files. */
function removerOf(kind: Kind, o: IpcObject, powers: Powers): Identity {
  return kind.named ? SELF : creatorIdentity(o, powers)
}

/** "2 semaphore set(s), 1 message queue(s)" of the outcomes with this status ('' when none), for log lines. */
export function countObjects(outcomes: ReadonlyArray<{ kind: KindName; status: string }>, status: string): string {
  return SMALL_KINDS.map((k) => [k, outcomes.filter((o) => o.kind === k.name && o.status === status).length] as const)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k.noun}(s)`)
    .join(', ')
}

/** `--sem-from-checkpoint restore|skip`, checked. */
export function parseSemFromCheckpoint(text: string | undefined): SemFromCheckpoint | undefined {
  if (text === undefined) return undefined
  if (text !== 'restore' && text !== 'skip') throw new TypeError(`--sem-from-checkpoint must be restore or skip, not ${text}`)
  return text
}

/** The help text of `--sem-from-checkpoint`. */
export const SEM_FROM_CHECKPOINT_HELP = `  --sem-from-checkpoint P  semaphore sets saved by a checkpoint while the app ran
                           (a lock held then comes back held by nobody): skip
                           (default: the app creates them afresh) or restore`

/** Columns of an object table (`ls`, `inspect`). */
export const OBJECT_COLUMNS = ['KIND', 'KEY', 'ID', 'MODE', 'OWNER', 'CREATOR', 'CONTENTS']

function contents(kind: KindName, n: { nsems?: number; qnum?: number; bytes?: number; data?: number; curmsgs?: number; maxmsg?: number; msgsize?: number }): string {
  if (kind === 'sem') return `${n.nsems} semaphore(s)`
  // Sizes for people here; --json carries the exact bytes.
  if (kind === 'msg') return `${n.qnum} message(s), ${humanSize(n.bytes ?? 0)}`
  if (kind === 'posix-shm' && n.data !== undefined) return `${humanSize(n.bytes ?? 0)}, ${humanSize(n.data)} in data`
  if (kind === 'mqueue') return `${n.curmsgs !== undefined ? `${n.curmsgs} message(s), ` : ''}${n.bytes !== undefined ? `${humanSize(n.bytes)}, ` : ''}${n.maxmsg !== undefined ? `maxmsg ${n.maxmsg} msgsize ${n.msgsize}` : ''}`.replace(/, $/, '')
  return humanSize(n.bytes ?? 0)
}

function row(o: { kind: KindName; key: string; id: number; mode: number; uid: number; gid: number; cuid: number; cgid: number }, what: string): string[] {
  const named = NAMED_KINDS.has(o.kind)
  return [o.kind, o.key, named ? '-' : String(o.id), o.mode.toString(8).padStart(4, '0'), `${o.uid}:${o.gid}`, named ? '-' : `${o.cuid}:${o.cgid}`, what]
}

/** Table rows of live objects. */
export function liveObjectRows(objects: IpcObject[]): string[][] {
  return objects.map((o) => row({ ...o, key: o.name ?? formatKey(o.key) }, contents(o.kind, { ...(o as { nsems?: number; qnum?: number }), bytes: o.bytes })))
}

/** Table rows of a generation's saved objects, then its unsaved ones. */
export function savedObjectRows(section: ObjectsSection): string[][] {
  return [
    ...section.records.map((r) => row(r, contents(r.kind, { ...r.attrs, bytes: r.kind === 'posix-shm' ? r.attrs.size : r.attrs.cbytes }))),
    ...section.unsaved.map((u) => row(u, `NOT SAVED: ${u.reason}`)),
  ]
}

/**
 * The saved objects that are live in this namespace already (same kind and
 * key; IPC_PRIVATE ones by id): a warm namespace (a container restarted
 * inside its pod) keeps them rather than restoring older copies.
 */
export function liveSavedObjects(section: ObjectsSection | undefined, filter?: SegmentFilter): string[] {
  if (!section?.records.length) return []
  const saved = new Set(section.records.map(recordIdentity))
  const out: string[] = []
  for (const kind of SMALL_KINDS) {
    // Only kinds the generation holds and this process takes (POSIX shm: in a container, or asked).
    if (!section.records.some((r) => r.kind === kind.name) || !kindSelected(filter, kind.name)) continue
    for (const o of kind.list().objects) {
      if (saved.has(identityOf(o))) out.push(kind.named ? `${kind.noun} ${o.name}` : `${kind.noun} ${formatKey(o.key)} (id ${o.id})`)
    }
  }
  return out
}

/** One live object of a kind other than segments against a generation's record of it (`diff`). */
export interface ObjectDiff {
  kind: KindName
  /** `0x%08x` for SysV kinds; a POSIX object's name ("/app.state"). */
  key: string
  /** SysV kinds: the live id (the saved one of a removed object). POSIX objects have none. */
  id?: number
  status: DiffStatus
  /** What differs, in words ("mode 600 → 640", "values #0 1 → 0"). */
  changes?: string[]
  /** Attributes that differ (nsems, qnum, cbytes, qbytes, size, curmsgs, maxmsg, msgsize): saved and live. */
  attributes?: Record<string, { saved: number; live: number }>
  /** Whether the contents (values, messages, data) are as saved; absent when they were not compared. */
  contents?: 'same' | 'differ'
  /** Why the contents were not compared (a POSIX queue cannot be read without taking its messages out). */
  notCompared?: string
}

/**
 * The live objects of every kind but segments against a generation's
 * `objects` section (`dir` is the generation's directory): added, removed,
 * changed (mode, owner, the kind's attributes, contents by CRC-32C of the
 * saved form), unchanged. Contents are read as a snapshot reads them, and
 * never disturbed: a kind whose reading would (POSIX queues) compares its
 * attributes only and says so. `notes` name what could not be compared.
 */
export function diffObjects(dir: string | null, section: ObjectsSection | undefined, filter: SegmentFilter | undefined, powers: Powers, signal?: AbortSignal): { objects: ObjectDiff[]; notes: string[] } {
  const take = objectPredicate(filter)
  const objects: ObjectDiff[] = []
  const notes: string[] = []
  let saved: Payload[] | null | undefined // read once, only to say which values differ
  const savedPayload = (index: number): Payload | undefined => {
    if (saved === undefined) {
      try {
        saved = dir && section ? readObjects(dir, section) : null
      } catch (e) {
        if (!(e instanceof ObjectDamage)) throw e
        notes.push(`the saved contents cannot be read (${e.message}): changes of contents are not detailed`)
        saved = null
      }
    }
    return saved?.[index]
  }
  for (const kind of SMALL_KINDS) {
    if (!kindSelected(filter, kind.name)) continue
    if (section && !section.kinds.includes(kind.name)) {
      notes.push(`${kind.noun}s not compared: the generation did not look at them${kind.finalOnly ? ' (only a final snapshot reads them)' : ' (left out by its filter)'}`)
      continue
    }
    const listing = kind.list()
    if (listing.unavailable) {
      notes.push(listing.unavailable)
      continue
    }
    const records = new Map((section?.records ?? []).flatMap((rec, index) => (rec.kind === kind.name ? [[recordIdentity(rec), { rec, index }] as const] : [])))
    const unsaved = new Map((section?.unsaved ?? []).filter((u) => u.kind === kind.name).map((u) => [recordIdentity(u), u]))
    for (const o of listing.objects.filter(take)) {
      signal?.throwIfAborted()
      const identity = identityOf(o)
      const base = { kind: kind.name, key: o.name ?? formatKey(o.key), ...(kind.named ? {} : { id: o.id }) }
      const hit = records.get(identity)
      records.delete(identity)
      if (!hit) {
        const u = unsaved.get(identity)
        objects.push({ ...base, status: 'added', ...(u ? { changes: [`not saved in the generation: ${u.reason}`] } : {}) })
        continue
      }
      objects.push({ ...base, ...compareObject(kind, o, hit.rec, powers, () => savedPayload(hit.index)) })
    }
    for (const { rec } of records.values()) {
      if (take({ ...rec, key: kind.named ? 0 : parseKey(rec.key), name: rec.key, ctime: 0, bytes: rec.length })) objects.push({ kind: kind.name, key: rec.key, ...(kind.named ? {} : { id: rec.id }), status: 'removed' })
    }
  }
  return { objects, notes }
}

/** A sink that keeps only the CRC-32C of what a streaming kind reads (diff writes nothing). */
function crcSink(): PayloadSink & { crc: number } {
  return {
    crc: 0,
    write(bytes) {
      this.crc = native.crc32c(bytes, this.crc)
    },
    restart() {
      this.crc = 0
    },
  }
}

/** One live object against its record: mode, owner, the kind's attributes, contents. */
function compareObject(kind: Kind, o: IpcObject, rec: ObjectRecord, powers: Powers, savedPayload: () => Payload | undefined): Omit<ObjectDiff, 'kind' | 'key' | 'id'> {
  const changes: string[] = []
  if (rec.mode !== o.mode) changes.push(`mode ${rec.mode.toString(8)} → ${o.mode.toString(8)}`)
  if (rec.uid !== o.uid || rec.gid !== o.gid) changes.push(`owner ${rec.uid}:${rec.gid} → ${o.uid}:${o.gid}`)
  let live: { attrs: Record<string, number>; payload?: Buffer; crc?: number } | undefined
  let notCompared: string | undefined
  if (kind.peek) {
    const p = kind.peek(o)
    if ('error' in p) notCompared = p.error
    else [live, notCompared] = [{ attrs: p.attrs }, p.notCompared]
  } else {
    const who = kind.readAs ? kind.readAs(o, powers) : readIdentity(o, powers)
    const sink = crcSink()
    const r = 'error' in who ? { unsaved: who.error } : kind.read(o, who, sink)
    if ('unsaved' in r) notCompared = `contents not compared: ${r.unsaved}`
    else live = { attrs: r.attrs, ...('payload' in r ? { payload: r.payload, crc: native.crc32c(r.payload) } : { crc: sink.crc }) }
  }
  const attributes: Record<string, { saved: number; live: number }> = {}
  for (const [a, label] of Object.entries(kind.diffAttrs)) {
    const [was, now] = [rec.attrs[a], live?.attrs[a]]
    if (was === undefined || now === undefined || was === now) continue
    attributes[a] = { saved: was, live: now }
    changes.push(`${label} ${was} → ${now}`)
  }
  let contents: ObjectDiff['contents']
  if (live?.crc !== undefined) {
    contents = hex(live.crc) === rec.crc32c ? 'same' : 'differ'
    if (contents === 'differ') {
      const before = kind.contentChange && live.payload ? savedPayload() : undefined
      changes.push(before ? kind.contentChange!(rec, before.subarray(0, before.length), live.payload!) : 'contents differ')
    }
  }
  return {
    status: changes.length ? 'changed' : 'unchanged',
    ...(changes.length ? { changes } : {}),
    ...(Object.keys(attributes).length ? { attributes } : {}),
    ...(contents ? { contents } : {}),
    ...(notCompared ? { notCompared } : {}),
  }
}
