/**
 * One notion of an IPC object, whatever its kind: its identity (kind, key,
 * id), its attributes (mode, owner, creator), and how its contents are read,
 * checked and recreated. One module per kind (sem.ts, msg.ts…) implements
 * {@link Kind}; snapshot, restore, filters and inspection are written once
 * over all kinds (src/kinds/index.ts).
 *
 * Segments (shm) keep their own streaming copy path (src/snapshot.ts,
 * src/restore.ts: chunked files, incremental, hugetlb); here they are one
 * more kind for listing and filtering. The small kinds' contents (semaphore
 * values, queue messages) live in one packed data file per generation.
 */
import type { Identity, Powers } from '../identity'
import type { Logger } from '../log'

/** The kinds of IPC object, as `--kind` names them. */
export const KIND_NAMES = ['shm', 'sem', 'msg'] as const
export type KindName = (typeof KIND_NAMES)[number]

/** An object's name and permission block as saved: its kind, `0x%08x` key, id, mode, owner, creator. */
export interface ObjectPerm {
  kind: KindName
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
  /** The key, unsigned (0 = IPC_PRIVATE: found again only by its id). */
  key: number
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
  /** What the kind keeps besides (nsems; qbytes and message count). */
  attrs: Record<string, number>
  /** Read from the kernel when saved; cannot be restored (times, pids). */
  info: Record<string, number>
}

/** What reading one object's contents gave. */
export type ReadResult = { attrs: Record<string, number>; info: Record<string, number>; payload: Buffer } | { unsaved: string; errno?: string }

/** Facts a restore plan checks against. */
export interface RestoreContext {
  powers: Powers
  log: Logger
}

export interface Kind<L extends IpcObject = IpcObject> {
  name: KindName
  /** "semaphore set", for messages. */
  noun: string
  /** Every live object of the kind in this namespace (and whether the list is complete). */
  list(): { objects: L[]; complete: boolean }
  /** Read the contents as `as` (unsaved with a reason when they cannot be read truly). */
  read(obj: L, as: Identity): ReadResult
  /** Check a saved payload's structure against its record; a reason when it is wrong. */
  check(rec: ObjectRecord, payload: Buffer): string | undefined
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
  create(rec: ObjectRecord, payload: Buffer, as: Identity, how: { chooseId: boolean; limits: Record<string, number> }): number
  /** The saved mode and owner, once every object is in place. */
  finish(rec: ObjectRecord, id: number, as: Identity): void
  remove(id: number, as: Identity): void
}

/** `kind 0x0000162e (id 3)` for log lines. */
export function describe(o: { kind: string; key: string | number; id: number }): string {
  const key = typeof o.key === 'number' ? '0x' + (o.key >>> 0).toString(16).padStart(8, '0') : o.key
  return `${o.kind} ${key} (id ${o.id})`
}
