/**
 * System V shared memory for Node: create and open segments by key, attach
 * them as Buffers over the segment's own memory, stat, list, change owner and
 * mode, remove. Every argument is checked here before the addon is called.
 *
 * A detached Buffer is neutered (length 0) for JavaScript; what Node's own
 * asynchronous consumers (zlib, fs, sockets, crypto) still hold reads zeros
 * and writes into private memory until the Buffer is collected (a
 * placeholder keeps the address: docs/LIBRARY.md). One thing can still crash
 * the process, as in C: writing through a read-only attachment (SIGSEGV).
 */
import { constants as bufferConstants } from 'node:buffer'
import { markAsUntransferable } from 'node:worker_threads'
import { DetachedError, sys, sysAsync } from './errors'
import { formatKey, IPC_PRIVATE, parseKey, type KeyLike } from './keys'
import { native, type RawShmStat } from './native'
import { checkBool, checkCount, checkId, checkMode, checkOptions } from './options'

export { IPC_PRIVATE }
const C = native.shmConstants

/** What {@link stat} and {@link list} report about a segment. */
export interface ShmStat {
  /** The segment id (shmid), what attach/stat/remove take. */
  id: number
  /** The key, unsigned (0 = IPC_PRIVATE). */
  key: number
  /** Size in bytes. */
  size: number
  /** Permission bits, `mode & 0o777`. */
  mode: number
  /** Owner uid and gid (changeable with {@link set}). */
  uid: number
  gid: number
  /** Creator uid and gid (fixed at creation). */
  cuid: number
  cgid: number
  /** Pid of the creator and of the last shmat/shmdt. */
  cpid: number
  lpid: number
  /** Number of current attachments. */
  nattch: number
  /** Last attach, detach and change times, seconds since the epoch (0 = never). */
  atime: number
  dtime: number
  ctime: number
  /** SHM_DEST: removed, waiting for its last detach. */
  dest: boolean
  /** SHM_LOCKED: locked in memory (SHM_LOCK). */
  locked: boolean
}

function toStat(raw: RawShmStat): ShmStat {
  return {
    id: raw.id,
    key: raw.key >>> 0,
    size: raw.size,
    mode: raw.mode & 0o777,
    uid: raw.uid,
    gid: raw.gid,
    cuid: raw.cuid,
    cgid: raw.cgid,
    cpid: raw.cpid,
    lpid: raw.lpid,
    nattch: raw.nattch,
    atime: raw.atime,
    dtime: raw.dtime,
    ctime: raw.ctime,
    dest: (raw.mode & C.SHM_DEST) !== 0,
    locked: (raw.mode & C.SHM_LOCKED) !== 0,
  }
}

export interface GetOptions {
  /** Size in bytes; required to create, optional (0) to open. */
  size?: number
  /** Permission bits for a new segment (default 0o600). */
  mode?: number
  /** Create the segment when the key has none (IPC_CREAT). */
  create?: boolean
  /** With create: fail with EEXIST when the key has one (IPC_EXCL). */
  exclusive?: boolean
  /** Back it with huge pages (SHM_HUGETLB); a number picks the huge page size in bytes. */
  hugetlb?: boolean | number
  /** Do not reserve swap (SHM_NORESERVE). */
  noreserve?: boolean
  /** Create as this uid/gid (for this call's thread only), so that the creator ids are theirs. */
  uid?: number
  gid?: number
}

const getOptionNames = ['size', 'mode', 'create', 'exclusive', 'hugetlb', 'noreserve', 'uid', 'gid'] as const

function hugeFlags(hugetlb: boolean | number | undefined): number {
  if (hugetlb === undefined || hugetlb === false) return 0
  if (hugetlb === true) return C.SHM_HUGETLB
  checkCount('hugetlb page size', hugetlb, { min: 1 })
  const log2 = Math.log2(hugetlb)
  if (!Number.isInteger(log2)) throw new RangeError(`hugetlb page size ${hugetlb} is not a power of two`)
  return C.SHM_HUGETLB | (log2 << C.SHM_HUGE_SHIFT)
}

/**
 * shmget: the id of the segment with this key, creating it when asked.
 * `get(IPC_PRIVATE, { size })` always creates a new segment.
 */
export function get(key: KeyLike, options: GetOptions = {}): number {
  checkOptions('shm.get', options, getOptionNames)
  const k = parseKey(key)
  const create = checkBool('create', options.create, false) || k === IPC_PRIVATE
  const exclusive = checkBool('exclusive', options.exclusive, false)
  const size = checkCount('size', options.size ?? 0)
  if (create && size === 0) throw new RangeError(`shm.get(${formatKey(k)}): size is required to create a segment`)
  const mode = checkMode('mode', options.mode ?? 0o600)
  const flags =
    mode |
    (create ? C.IPC_CREAT : 0) |
    (exclusive ? C.IPC_EXCL : 0) |
    hugeFlags(options.hugetlb) |
    (checkBool('noreserve', options.noreserve, false) ? C.SHM_NORESERVE : 0)
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  // Last, as it reads the namespace's limits: every argument is checked first.
  if (size > 0) {
    const { shmmax } = limits()
    if (size > shmmax) throw new RangeError(`size ${size} is above this namespace's SHMMAX (${shmmax}); raise kernel.shmmax`)
  }
  return sys(`key ${formatKey(k)}`, () => native.shmGet(k, size, flags, uid, gid))
}

export interface AttachOptions {
  /** Attach read-only (SHM_RDONLY). Writing through the Buffer then kills the process with SIGSEGV. */
  readonly?: boolean
  /** Start of the window the Buffer shows, in bytes (default 0). */
  offset?: number
  /** Length of the window (default: to the end). Node 20 cannot make a Buffer over 4 GiB. */
  length?: number
  /** Attach as this uid/gid (for this call only): how root without CAP_IPC_OWNER reads a 0600 segment. */
  uid?: number
  gid?: number
}

/**
 * A Buffer over a segment's memory, as {@link attach} returns it. It is
 * Disposable: `using b = shm.attach(id)` detaches it at the end of the block.
 */
export type AttachedBuffer = Buffer & Disposable

interface Attachment {
  handle: object
  id: number
  /** detach() ran: the Buffer is neutered, the attachment gone. */
  detached: boolean
}

const attachments = new WeakMap<Buffer, Attachment>()

function attachmentOf(what: string, buffer: Buffer): Attachment {
  const a = attachments.get(buffer)
  if (!a) throw new TypeError(`${what}: not a Buffer returned by shm.attach`)
  return a
}

/**
 * shmat: a Buffer over the segment's memory (no copy). Each call attaches
 * once; {@link detach} (or `using`) releases it. A Buffer that becomes
 * unreachable is detached too, but only after a garbage collection and a turn
 * of the event loop: in a loop, detach. The Buffer cannot be transferred to a
 * worker.
 */
export function attach(id: number, options: AttachOptions = {}): AttachedBuffer {
  checkOptions('shm.attach', options, ['readonly', 'offset', 'length', 'uid', 'gid'])
  checkCount('id', id, { max: 0x7fffffff })
  const readonly = checkBool('readonly', options.readonly, false)
  const offset = checkCount('offset', options.offset ?? 0)
  const length = options.length === undefined ? -1 : checkCount('length', options.length)
  if (length > bufferConstants.MAX_LENGTH) {
    throw new RangeError(`length ${length} is above the largest Buffer Node can make (${bufferConstants.MAX_LENGTH}); attach a smaller window`)
  }
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  const raw = sys(`id ${id}`, () => native.shmAttach(id, readonly, offset, length, uid, gid, bufferConstants.MAX_LENGTH))
  const buffer = raw.buffer as AttachedBuffer
  attachments.set(buffer, { handle: raw.handle, id, detached: false })
  markAsUntransferable(buffer.buffer)
  Object.defineProperty(buffer, Symbol.dispose, { value: () => detach(buffer), configurable: true })
  return buffer
}

/**
 * Release an attachment made by {@link attach}: the segment's nattch falls
 * at once and the Buffer has length 0. Node consumers still holding its
 * memory (a zlib, fs, socket or crypto call in flight) then read zeros and
 * write into private memory, never the segment and never a later mapping at
 * that address; await them before detaching. Detaching twice is harmless;
 * EBUSY while {@link checksum} is using the attachment.
 */
export function detach(buffer: Buffer): void {
  const a = attachmentOf('shm.detach', buffer)
  if (a.detached) return
  sys(`id ${a.id}`, () => native.shmDetach(a.handle, buffer))
  a.detached = true
}

/**
 * CRC-32C of an attachment's bytes, computed off the JS thread (hardware
 * CRC where the CPU has it). While it runs the attachment is in use:
 * {@link detach} throws EBUSY, and a Buffer dropped meanwhile is detached
 * once the checksum is done.
 */
export async function checksum(buffer: Buffer): Promise<number> {
  const a = attachmentOf('shm.checksum', buffer)
  if (a.detached) throw new DetachedError('shm.checksum', `id ${a.id}`)
  return sysAsync(`id ${a.id}`, () => native.checksumMapping(a.handle, buffer))
}

/** True when `buffer` came from {@link attach} and is not detached. */
export function isAttached(buffer: Buffer): boolean {
  const a = attachments.get(buffer)
  return a !== undefined && !a.detached
}

/** IPC_STAT of one segment. */
export function stat(id: number): ShmStat {
  checkCount('id', id, { max: 0x7fffffff })
  return toStat(sys(`id ${id}`, () => native.shmStat(id)))
}

/** Every segment of this IPC namespace, and whether the list is complete. */
export interface Scan {
  segments: ShmStat[]
  /**
   * false on kernels before 4.17 (no SHM_STAT_ANY): segments this process may
   * not read are then missing from the list.
   */
  complete: boolean
}

/** Every segment of this IPC namespace, read from the kernel (SHM_INFO + SHM_STAT_ANY). */
export function scan(): Scan {
  const raw = sys('list', () => native.shmList())
  return { segments: raw.segments.map(toStat), complete: raw.statAny }
}

/** Every segment of this IPC namespace (see {@link scan} for completeness). */
export function list(): ShmStat[] {
  return scan().segments
}

/** Options of {@link set}. */
export interface SetOptions {
  /** New owner uid / gid. */
  uid?: number
  gid?: number
  /** New permission bits (0..0o777). */
  mode?: number
  /**
   * Act as this uid/gid for this call (thread only). IPC_SET needs the owner,
   * the creator or CAP_SYS_ADMIN, which root in a container lacks.
   */
  asUid?: number
  asGid?: number
}

/** IPC_SET: change the owner uid/gid and the permission bits. */
export function set(id: number, options: SetOptions): void {
  checkOptions('shm.set', options, ['uid', 'gid', 'mode', 'asUid', 'asGid'])
  checkCount('id', id, { max: 0x7fffffff })
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  const mode = options.mode === undefined ? -1 : checkMode('mode', options.mode)
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`id ${id}`, () => native.shmSet(id, uid, gid, mode, asUid, asGid))
}

/**
 * IPC_RMID: remove the segment (it goes when its last attachment does).
 * `asUid`/`asGid` act as that identity, as in {@link set}.
 */
export function remove(id: number, options: { asUid?: number; asGid?: number } = {}): void {
  checkOptions('shm.remove', options, ['asUid', 'asGid'])
  checkCount('id', id, { max: 0x7fffffff })
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`id ${id}`, () => native.shmRemove(id, asUid, asGid))
}

/** The namespace's limits and usage. */
export interface Limits {
  /** Largest segment, bytes (SHMMAX). */
  shmmax: number
  /** Smallest segment, bytes. */
  shmmin: number
  /** Most segments in the namespace (SHMMNI). */
  shmmni: number
  /** Total shared memory allowed, in pages (SHMALL). */
  shmall: number
  /** Page size SHMALL counts in. */
  pageSize: number
  /** Segments now. */
  segments: number
  /** Pages of all segments now. */
  totalPages: number
  residentPages: number
  swappedPages: number
}

/** The namespace's SHMMAX, SHMMNI, SHMALL and usage (IPC_INFO + SHM_INFO). */
export function limits(): Limits {
  const raw = sys('limits', () => native.shmLimits())
  // SHMMAX/SHMALL default to ULONG_MAX-ish values that a double cannot hold exactly.
  const clamp = (n: number) => Math.min(n, Number.MAX_SAFE_INTEGER)
  return {
    shmmax: clamp(raw.shmmax),
    shmmin: raw.shmmin,
    shmmni: raw.shmmni,
    shmall: clamp(raw.shmall),
    pageSize: pageSize,
    segments: raw.usedIds,
    totalPages: raw.totalPages,
    residentPages: raw.residentPages,
    swappedPages: raw.swappedPages,
  }
}

/** The system page size (SHMALL and mincore count in it). */
export const pageSize: number = C.PAGE_SIZE
