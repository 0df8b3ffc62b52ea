/**
 * System V semaphore sets for Node: create and open sets by key, read and set
 * every value, non-blocking semop, stat, list, change owner and mode, remove.
 * Every argument is checked here before the addon is called. Nothing here
 * waits: an operation that would block returns false (IPC_NOWAIT).
 *
 * Calls that the kernel checks against the set's mode (stat, values,
 * setValues, waiters, op) take `uid`/`gid`: act as that identity for the one
 * call (thread only), which is how root without CAP_IPC_OWNER (a Docker
 * container) reads a 0600 set of another user.
 */
import { sys } from './errors'
import { formatKey, IPC_PRIVATE, parseKey, type KeyLike } from './keys'
import { native, type RawSemStat } from './native'
import { checkAs, checkBool, checkCount, checkId, checkMode, checkOptions } from './options'

export { IPC_PRIVATE }
const C = native.shmConstants

/** What {@link stat} and {@link list} report about a semaphore set. */
export interface SemStat {
  /** The set's id (semid), what the other calls take. */
  id: number
  /** The key, unsigned (0 = IPC_PRIVATE). */
  key: number
  /** Number of semaphores in the set. */
  nsems: number
  /** Permission bits, `mode & 0o777`. */
  mode: number
  /** Owner uid and gid (changeable with {@link set}). */
  uid: number
  gid: number
  /** Creator uid and gid (fixed at creation). */
  cuid: number
  cgid: number
  /** Last semop and last change times, seconds since the epoch (0 = never). */
  otime: number
  ctime: number
}

function toStat(raw: RawSemStat): SemStat {
  return {
    id: raw.id,
    key: raw.key >>> 0,
    nsems: raw.nsems,
    mode: raw.mode & 0o777,
    uid: raw.uid,
    gid: raw.gid,
    cuid: raw.cuid,
    cgid: raw.cgid,
    otime: raw.otime,
    ctime: raw.ctime,
  }
}

/** Act as this uid/gid for one call (thread only). */
export interface AsOptions {
  uid?: number
  gid?: number
}

function checkSemId(id: unknown): number {
  return checkCount('id', id, { max: 0x7fffffff })
}

export interface GetOptions {
  /** Number of semaphores; required to create (1..SEMMSL), optional (0) to open. */
  nsems?: number
  /** Permission bits for a new set (default 0o600). */
  mode?: number
  /** Create the set when the key has none (IPC_CREAT). */
  create?: boolean
  /** With create: fail with EEXIST when the key has one (IPC_EXCL). */
  exclusive?: boolean
  /** Create as this uid/gid (this call's thread only), so that the creator ids are theirs. */
  uid?: number
  gid?: number
}

/**
 * semget: the id of the set with this key, creating it when asked (its values
 * start at 0). `get(IPC_PRIVATE, { nsems })` always creates a new set.
 */
export function get(key: KeyLike, options: GetOptions = {}): number {
  checkOptions('sem.get', options, ['nsems', 'mode', 'create', 'exclusive', 'uid', 'gid'])
  const k = parseKey(key)
  const create = checkBool('create', options.create, false) || k === IPC_PRIVATE
  const exclusive = checkBool('exclusive', options.exclusive, false)
  const nsems = checkCount('nsems', options.nsems ?? 0, { max: 0xffff })
  if (create && nsems === 0) throw new RangeError(`sem.get(${formatKey(k)}): nsems is required to create a set`)
  const mode = checkMode('mode', options.mode ?? 0o600)
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  if (nsems > 0) {
    const { semmsl } = limits()
    if (nsems > semmsl) throw new RangeError(`nsems ${nsems} is above this namespace's SEMMSL (${semmsl}); raise kernel.sem`)
  }
  const flags = mode | (create ? C.IPC_CREAT : 0) | (exclusive ? C.IPC_EXCL : 0)
  return sys(`sem key ${formatKey(k)}`, () => native.semGet(k, nsems, flags, uid, gid))
}

/** IPC_STAT of one set (needs read permission: see `uid`/`gid`). */
export function stat(id: number, options: AsOptions = {}): SemStat {
  const [uid, gid] = checkAs('sem.stat', options)
  checkSemId(id)
  return toStat(sys(`sem id ${id}`, () => native.semStat(id, uid, gid)))
}

/** Every set of this IPC namespace, and whether the list is complete. */
export interface Scan {
  sets: SemStat[]
  /** false on kernels before 4.17 (no SEM_STAT_ANY): sets this process may not read are missing. */
  complete: boolean
}

/** Every set of this IPC namespace, read from the kernel (SEM_INFO + SEM_STAT_ANY). */
export function scan(): Scan {
  const raw = sys('sem list', () => native.semList())
  return { sets: raw.sets.map(toStat), complete: raw.statAny }
}

/** Every set of this IPC namespace (see {@link scan} for completeness). */
export function list(): SemStat[] {
  return scan().sets
}

/** GETALL: every semaphore's value, in order. */
export function values(id: number, options: AsOptions = {}): number[] {
  const [uid, gid] = checkAs('sem.values', options)
  checkSemId(id)
  return sys(`sem id ${id}`, () => native.semGetAll(id, native.semStat(id, uid, gid).nsems, uid, gid))
}

/**
 * SETALL: set every semaphore's value at once (one value per semaphore, each
 * 0..SEMVMX). The kernel also drops every process's SEM_UNDO adjustment for
 * the set, and wakes the waiters that can now go on.
 */
export function setValues(id: number, values: readonly number[], options: AsOptions = {}): void {
  const [uid, gid] = checkAs('sem.setValues', options)
  checkSemId(id)
  if (!Array.isArray(values)) throw new TypeError('sem.setValues: values must be an array of numbers')
  values.forEach((v, i) => checkCount(`values[${i}]`, v, { max: 0xffff }))
  const { semvmx } = limits()
  const high = values.findIndex((v) => v > semvmx)
  if (high >= 0) throw new RangeError(`values[${high}] = ${values[high]} is above SEMVMX (${semvmx})`)
  sys(`sem id ${id}`, () => {
    const { nsems } = native.semStat(id, uid, gid)
    if (values.length !== nsems) throw new RangeError(`sem.setValues: the set ${id} has ${nsems} semaphore(s), got ${values.length} value(s)`)
    native.semSetAll(id, [...values], uid, gid)
  })
}

/** Per semaphore: who operated on it last and how many wait. */
export interface Waiters {
  /** Pid of the last process that operated on the semaphore (SETALL makes it the caller's). */
  pid: number
  /** Processes waiting for the value to increase. */
  ncnt: number
  /** Processes waiting for it to become zero. */
  zcnt: number
}

/** GETPID, GETNCNT and GETZCNT of every semaphore. */
export function waiters(id: number, options: AsOptions = {}): Waiters[] {
  const [uid, gid] = checkAs('sem.waiters', options)
  checkSemId(id)
  const raw = sys(`sem id ${id}`, () => native.semWaiters(id, native.semStat(id, uid, gid).nsems, uid, gid))
  return raw.pid.map((pid, i) => ({ pid, ncnt: raw.ncnt[i]!, zcnt: raw.zcnt[i]! }))
}

/** One operation of {@link op}. */
export interface Operation {
  /** Which semaphore (0-based). */
  num: number
  /** Add this (negative: take, waiting for enough; 0: wait for zero). */
  op: number
  /** SEM_UNDO: the kernel reverts it when this process exits. */
  undo?: boolean
}

/**
 * semop with IPC_NOWAIT: all operations at once or none. true when done,
 * false when it would have to wait (nothing changed). Never blocks.
 */
export function op(id: number, operations: readonly Operation[], options: AsOptions = {}): boolean {
  const [uid, gid] = checkAs('sem.op', options)
  checkSemId(id)
  if (!Array.isArray(operations) || operations.length === 0) throw new TypeError('sem.op: operations must be a non-empty array')
  const flat: number[] = []
  operations.forEach((o, i) => {
    checkOptions(`sem.op operations[${i}]`, o, ['num', 'op', 'undo'])
    const num = checkCount(`operations[${i}].num`, o.num, { max: 0xffff })
    if (typeof o.op !== 'number' || !Number.isInteger(o.op)) throw new TypeError(`operations[${i}].op must be an integer, got ${String(o.op)}`)
    if (o.op < -0x8000 || o.op > 0x7fff) throw new RangeError(`operations[${i}].op must be between -32768 and 32767, got ${o.op}`)
    flat.push(num, o.op, checkBool(`operations[${i}].undo`, o.undo, false) ? native.semConstants.SEM_UNDO : 0)
  })
  return sys(`sem id ${id}`, () => native.semOp(id, flat, uid, gid))
}

/** Options of {@link set}. */
export interface SetOptions {
  /** New owner uid / gid. */
  uid?: number
  gid?: number
  /** New permission bits (0..0o777). */
  mode?: number
  /** Act as this uid/gid (IPC_SET needs the owner, the creator or CAP_SYS_ADMIN). */
  asUid?: number
  asGid?: number
}

/** IPC_SET: change the owner uid/gid and the permission bits.
 * The fields not given are kept: they are read with IPC_STAT, which needs
 * read permission (EACCES without it); giving every field needs none.
 */
export function set(id: number, options: SetOptions): void {
  checkOptions('sem.set', options, ['uid', 'gid', 'mode', 'asUid', 'asGid'])
  checkSemId(id)
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  const mode = options.mode === undefined ? -1 : checkMode('mode', options.mode)
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`sem id ${id}`, () => native.semSet(id, uid, gid, mode, asUid, asGid))
}

/** IPC_RMID: remove the set at once; processes waiting on it get EIDRM. */
export function remove(id: number, options: { asUid?: number; asGid?: number } = {}): void {
  checkOptions('sem.remove', options, ['asUid', 'asGid'])
  checkSemId(id)
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`sem id ${id}`, () => native.semRemove(id, asUid, asGid))
}

/** The namespace's limits (kernel.sem) and usage. */
export interface Limits {
  /** Most semaphores per set (SEMMSL). */
  semmsl: number
  /** Most semaphores in the namespace (SEMMNS). */
  semmns: number
  /** Most operations per semop (SEMOPM). */
  semopm: number
  /** Most sets in the namespace (SEMMNI). */
  semmni: number
  /** Largest value (SEMVMX, 32767). */
  semvmx: number
  /** Sets now. */
  sets: number
  /** Semaphores now, in all sets. */
  semaphores: number
}

/** The namespace's kernel.sem limits and usage (IPC_INFO + SEM_INFO). */
export function limits(): Limits {
  const raw = sys('sem limits', () => native.semLimits())
  return { semmsl: raw.semmsl, semmns: raw.semmns, semopm: raw.semopm, semmni: raw.semmni, semvmx: raw.semvmx, sets: raw.usedIds, semaphores: raw.usedSems }
}
