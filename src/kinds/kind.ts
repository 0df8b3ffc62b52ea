/**
 * One notion of an IPC object, whatever its kind: its identity (kind, key,
 * id), its attributes (mode, owner, creator), and how its contents are read,
 * checked and recreated. One module per kind (sem.ts, msg.ts…) implements
 * {@link Kind}; snapshot, restore, filters and inspection are written once
 * over all kinds (src/kinds/index.ts).
 *
 * Segments (shm) keep their own streaming copy path (src/snapshot.ts,
 * src/restore.ts: chunked files, incremental, hugetlb); here they are one
 * more kind for listing and filtering. The other kinds' contents (semaphore
 * values, queue messages, POSIX objects' data runs) live in one packed data
 * file per generation.
 *
 * SysV objects are known by key (and id); POSIX objects (posix-shm, mqueue)
 * are files known by name: their record's `key` holds the name ("/app.state",
 * as shm_open and mq_open spell it), their id is the file's inode number
 * (never kept), and their creator is their owner (a file has no other).
 */
import type { Identity, Powers } from '../identity'
import type { Logger } from '../log'

/** The kinds of IPC object, as `--kind` names them. */
export const KIND_NAMES = ['shm', 'sem', 'msg', 'posix-shm', 'mqueue'] as const
export type KindName = (typeof KIND_NAMES)[number]

/** Kinds whose objects are known by a name, not a key. */
export const NAMED_KINDS: ReadonlySet<KindName> = new Set(['posix-shm', 'mqueue'])

/**
 * Kinds of the mount namespace, not the IPC namespace (/dev/shm): off unless
 * named in `--kind`, or shmkeep is PID 1 of its container — so that the
 * host's own /dev/shm is never saved or restored by accident (src/filter.ts).
 */
export const CONTAINER_ONLY_KINDS: ReadonlySet<KindName> = new Set(['posix-shm'])

/** How a live object compares with a generation (`diff`). */
export type DiffStatus = 'added' | 'removed' | 'changed' | 'unchanged'

/** An object's name and permission block as saved: its kind, `0x%08x` key (a POSIX object's name), id, mode, owner, creator. */
export interface ObjectPerm {
  kind: KindName
  /** `0x%08x` for SysV kinds; the name ("/app.state") for POSIX ones. */
  key: string
  /** The id (a saved one is kept on restore where the kernel lets us choose). */
  id: number
  /** `mode & 0o777`. */
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
}

/** A live object of any kind: its name and permission block, with the key as a number. */
export interface IpcObject extends Omit<ObjectPerm, 'key'> {
  /** The key, unsigned (0 = IPC_PRIVATE: found again only by its id; 0 for POSIX objects). */
  key: number
  /** A POSIX object's name, "/app.state" (as shm_open/mq_open take it). */
  name?: string
  /** Last change time (IPC_SET, SETALL…), seconds: lineage notices an object changed under it. */
  ctime: number
  /** Bytes of content (a segment's size, a queue's cbytes, 2 per semaphore). */
  bytes: number
}

/** One saved object in GENERATION (`objects.records`); its contents are in the packed data file. */
export interface ObjectRecord extends ObjectPerm {
  /** Where its contents are in the packed data file, and their CRC-32C. */
  offset: number
  length: number
  crc32c: string
  /** What the kind keeps besides (nsems; qbytes and message count; size, maxmsg…). */
  attrs: Record<string, number>
  /** Read from the kernel when saved; cannot be restored (times, pids). */
  info: Record<string, number>
}

/**
 * A saved object's contents: in memory (a Buffer is one), or — a large POSIX
 * shm object's — read from the packed data file piece by piece, so that a
 * 1 GiB object never costs 1 GiB of memory.
 */
export interface Payload {
  readonly length: number
  /** Bytes [start, end): use them at once (a large payload's piece is overwritten by the next call). */
  subarray(start: number, end: number): Buffer
}

/** Where a kind that streams its contents (see {@link Kind.streams}) writes them as it reads them. */
export interface PayloadSink {
  write(bytes: Uint8Array): void
  /** Forget what this object wrote so far (its read starts again, or it is not saved). */
  restart(): void
}

/** What reading one object's contents gave: the bytes, or how many were written to the sink. */
export type ReadResult =
  | { attrs: Record<string, number>; info: Record<string, number>; payload: Buffer }
  | { attrs: Record<string, number>; info: Record<string, number>; streamed: number }
  | { unsaved: string; errno?: string }

/** Facts a restore plan checks against. */
export interface RestoreContext {
  powers: Powers
  log: Logger
}

/** What listing a kind found. */
export interface KindList<L> {
  objects: L[]
  /** False when some objects could not be listed (no *_STAT_ANY). */
  complete: boolean
  /** Entries that are not objects of the kind, named with why (a directory in /dev/shm). */
  skipped?: string[]
  /** Why nothing of this kind can be listed here at all (no /dev/mqueue of this namespace). */
  unavailable?: string
  /** Where the objects were found, for the log ("/dev/shm: tmpfs of 64.0 MiB"). */
  where?: string
}

/** What a restore knows when it creates an object (read once per restore, not once per object). */
export interface CreateContext {
  /** Arm the kind's next-id counter with the saved id first. */
  chooseId: boolean
  /** The kind's limits in this namespace. */
  limits: Record<string, number>
  /** This process has CAP_SYS_RESOURCE (attributes above the namespace's limits can be kept). */
  resource: boolean
}

export interface Kind<L extends IpcObject = IpcObject> {
  name: KindName
  /** "semaphore set", for messages. */
  noun: string
  /** Known by name (POSIX), not by key: no ids to keep, no IPC_PRIVATE. */
  named?: boolean
  /**
   * Only at a final snapshot (the app has exited) or when named in `--kind`:
   * reading the contents disturbs them (POSIX queues have no non-destructive read).
   */
  finalOnly?: boolean
  /** Every live object of the kind in this namespace (and whether the list is complete). */
  list(): KindList<L>
  /** Who reads an object (default: the SysV rules of src/identity.ts). */
  readAs?(obj: L, powers: Powers): Identity | { error: string }
  /** Who creates a saved object (default: its creator, as SysV objects). */
  createAs?(rec: ObjectRecord, powers: Powers): Identity
  /**
   * Its contents can be large (POSIX shm objects): `read` writes them to the
   * sink as it reads, and a restore gets them from the packed file piece by
   * piece ({@link Payload}). The other kinds' contents are small and whole
   * in memory (Buffers).
   */
  streams?: boolean
  /** Read the contents as `as` (unsaved with a reason when they cannot be read truly); a kind that streams writes them to `sink`. */
  read(obj: L, as: Identity, sink: PayloadSink): ReadResult
  /** Check a saved payload's structure against its record; a reason when it is wrong. */
  check(rec: ObjectRecord, payload: Payload): string | undefined
  /**
   * What `diff` compares besides mode and owner: attribute (as in
   * {@link ObjectRecord.attrs}) → its name in a change line.
   */
  diffAttrs: Record<string, string>
  /**
   * For `diff`, when reading the contents would disturb them (POSIX queues:
   * no non-destructive read): the attributes only, and why the contents are
   * not compared.
   */
  peek?(obj: L): { attrs: Record<string, number>; notCompared: string } | { error: string }
  /** The contents' change in words ("values #0 1 → 0"); default: "contents differ". */
  contentChange?(rec: ObjectRecord, saved: Buffer, live: Buffer): string
  /** The namespace limits that matter to this kind (recorded, compared at restore). */
  limits(): Record<string, number>
  /**
   * Problems that stop these records from being created here (a limit too
   * low), and attributes that will not be kept (`notKept`, per record index).
   */
  fit(records: ObjectRecord[], ctx: RestoreContext): { problems: string[]; notKept: Map<ObjectRecord, string> }
  /**
   * Create the object with its contents, mode 0600, as its creator; returns
   * its id. With `chooseId`, the kind's next-id counter is armed with the
   * saved id first. Removes what it made when it fails.
   */
  create(rec: ObjectRecord, payload: Payload, as: Identity, how: CreateContext): number
  /** The saved mode and owner, once every object is in place. */
  finish(rec: ObjectRecord, id: number, as: Identity): void
  /** Remove an object: SysV kinds by id, POSIX ones by name (only while its inode is `id`). */
  remove(target: { id: number; key: string }, as: Identity): void
  /** Leftovers of a killed restore by process `pid` that only the kind can tell (temporary files): removed, named. */
  cleanup?(pid?: number): string[]
}

/** `kind 0x0000162e (id 3)` (`posix-shm /app.state`) for log lines. */
export function describe(o: { kind: string; key: string | number; id: number; name?: string }): string {
  if (NAMED_KINDS.has(o.kind as KindName)) return `${o.kind} ${o.name ?? o.key}`
  const key = typeof o.key === 'number' ? '0x' + (o.key >>> 0).toString(16).padStart(8, '0') : o.key
  return `${o.kind} ${key} (id ${o.id})`
}

/** The identity of a live object within its kind: the key, the id of an IPC_PRIVATE one, a POSIX object's name. */
export function identityOf(o: { kind: KindName; key: number; id: number; name?: string }): string {
  if (NAMED_KINDS.has(o.kind)) return `${o.kind}:${o.name}`
  return `${o.kind}:${o.key === 0 ? `id ${o.id}` : '0x' + (o.key >>> 0).toString(16).padStart(8, '0')}`
}

/** The identity of a saved record, comparable with {@link identityOf}. */
export function recordIdentity(r: { kind: KindName; key: string; id: number }): string {
  if (NAMED_KINDS.has(r.kind)) return `${r.kind}:${r.key}`
  return `${r.kind}:${parseInt(r.key, 16) === 0 ? `id ${r.id}` : r.key}`
}

/** A small kind's payload as one Buffer (a Buffer already, as they are never streamed). */
export function inMemory(p: Payload): Buffer {
  return Buffer.isBuffer(p) ? p : p.subarray(0, p.length)
}
