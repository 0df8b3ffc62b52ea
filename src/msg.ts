/**
 * System V message queues for Node: create and open queues by key, send and
 * receive without ever waiting (IPC_NOWAIT: a full queue or an empty one is
 * an answer, not a block), read a message without removing it (MSG_COPY),
 * stat, list, change owner, mode and size, remove. Every argument is checked
 * here before the addon is called.
 *
 * Calls that the kernel checks against the queue's mode take `uid`/`gid`:
 * act as that identity for the one call (thread only), which is how root
 * without CAP_IPC_OWNER (a Docker container) reads another user's 0600 queue.
 */
import { sys } from './errors'
import { formatKey, IPC_PRIVATE, parseKey, type KeyLike } from './keys'
import { native, type RawMsgStat } from './native'
import { checkAs, checkBool, checkCount, checkId, checkMode, checkOptions } from './options'

export { IPC_PRIVATE }
const C = native.shmConstants
const M = native.msgConstants

/** What {@link stat} and {@link list} report about a queue. */
export interface MsgStat {
  /** The queue's id (msqid), what the other calls take. */
  id: number
  /** The key, unsigned (0 = IPC_PRIVATE). */
  key: number
  /** Permission bits, `mode & 0o777`. */
  mode: number
  /** Owner uid and gid (changeable with {@link set}). */
  uid: number
  gid: number
  /** Creator uid and gid (fixed at creation). */
  cuid: number
  cgid: number
  /** Bytes of all messages now in the queue. */
  cbytes: number
  /** Messages now in the queue. */
  qnum: number
  /** Most bytes the queue may hold (starts at kernel.msgmnb). */
  qbytes: number
  /** Pid of the last msgsnd and the last msgrcv. */
  lspid: number
  lrpid: number
  /** Last send, receive and change times, seconds since the epoch (0 = never). */
  stime: number
  rtime: number
  ctime: number
}

function toStat(raw: RawMsgStat): MsgStat {
  return { ...raw, key: raw.key >>> 0, mode: raw.mode & 0o777 }
}

/** A message: its type (> 0) and its bytes. */
export interface Message {
  type: number
  data: Buffer
}

/** Act as this uid/gid for one call (thread only). */
export interface AsOptions {
  uid?: number
  gid?: number
}

function checkMsgId(id: unknown): number {
  return checkCount('id', id, { max: 0x7fffffff })
}

export interface GetOptions {
  /** Permission bits for a new queue (default 0o600). */
  mode?: number
  /** Create the queue when the key has none (IPC_CREAT). */
  create?: boolean
  /** With create: fail with EEXIST when the key has one (IPC_EXCL). */
  exclusive?: boolean
  /** Create as this uid/gid (this call's thread only), so that the creator ids are theirs. */
  uid?: number
  gid?: number
}

/** msgget: the id of the queue with this key, creating it when asked. */
export function get(key: KeyLike, options: GetOptions = {}): number {
  checkOptions('msg.get', options, ['mode', 'create', 'exclusive', 'uid', 'gid'])
  const k = parseKey(key)
  const create = checkBool('create', options.create, false) || k === IPC_PRIVATE
  const exclusive = checkBool('exclusive', options.exclusive, false)
  const mode = checkMode('mode', options.mode ?? 0o600)
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  const flags = mode | (create ? C.IPC_CREAT : 0) | (exclusive ? C.IPC_EXCL : 0)
  return sys(`msg key ${formatKey(k)}`, () => native.msgGet(k, flags, uid, gid))
}

/** IPC_STAT of one queue (needs read permission: see `uid`/`gid`). */
export function stat(id: number, options: AsOptions = {}): MsgStat {
  const [uid, gid] = checkAs('msg.stat', options)
  checkMsgId(id)
  return toStat(sys(`msg id ${id}`, () => native.msgStat(id, uid, gid)))
}

/** Every queue of this IPC namespace, and whether the list is complete. */
export interface Scan {
  queues: MsgStat[]
  /** false on kernels before 4.17 (no MSG_STAT_ANY): queues this process may not read are missing. */
  complete: boolean
}

/** Every queue of this IPC namespace, read from the kernel (MSG_INFO + MSG_STAT_ANY). */
export function scan(): Scan {
  const raw = sys('msg list', () => native.msgList())
  return { queues: raw.queues.map(toStat), complete: raw.statAny }
}

/** Every queue of this IPC namespace (see {@link scan} for completeness). */
export function list(): MsgStat[] {
  return scan().queues
}

function checkType(what: string, type: unknown, min: number): number {
  return checkCount(what, type, { min, max: Number.MAX_SAFE_INTEGER }) // C long; JS keeps safe integers
}

function bytes(what: string, data: unknown): Uint8Array {
  if (typeof data === 'string') return Buffer.from(data)
  if (data instanceof Uint8Array) return data
  throw new TypeError(`${what}: data must be a Buffer, a Uint8Array or a string`)
}

/**
 * msgsnd with IPC_NOWAIT: true when the message is in the queue, false when
 * the queue is full (nothing sent). `type` must be > 0; the data at most
 * kernel.msgmax bytes.
 */
export function send(id: number, type: number, data: Uint8Array | string, options: AsOptions = {}): boolean {
  const [uid, gid] = checkAs('msg.send', options)
  checkMsgId(id)
  checkType('type', type, 1)
  const b = bytes('msg.send', data)
  const { msgmax } = limits()
  if (b.byteLength > msgmax) throw new RangeError(`message of ${b.byteLength} bytes is above this namespace's MSGMAX (${msgmax}); raise kernel.msgmax`)
  return sys(`msg id ${id}`, () => native.msgSend(id, type, b, 0, uid, gid))
}

export interface ReceiveOptions extends AsOptions {
  /**
   * Which message (msgtyp): 0 the first (default); > 0 the first of that
   * type (with `except`: the first of another type); < 0 the first of the
   * lowest type ≤ |type|.
   */
  type?: number
  /** MSG_EXCEPT: with type > 0, the first message of any other type. */
  except?: boolean
  /** MSG_NOERROR: cut a message longer than `maxSize` instead of failing with E2BIG (the rest is lost). */
  truncate?: boolean
  /** Largest message to take (default kernel.msgmax, which no message exceeds). */
  maxSize?: number
}

/**
 * msgrcv with IPC_NOWAIT: the message taken out of the queue, or null when
 * none matches. Never blocks.
 */
export function receive(id: number, options: ReceiveOptions = {}): Message | null {
  const [uid, gid] = checkAs('msg.receive', options, ['type', 'except', 'truncate', 'maxSize'])
  checkMsgId(id)
  const type = options.type ?? 0
  if (typeof type !== 'number' || !Number.isSafeInteger(type)) throw new TypeError(`type must be an integer, got ${String(type)}`)
  const except = checkBool('except', options.except, false)
  if (except && type <= 0) throw new RangeError('msg.receive: except needs a type > 0')
  const truncate = checkBool('truncate', options.truncate, false)
  const maxSize = options.maxSize === undefined ? undefined : checkCount('maxSize', options.maxSize, { max: 0x7fffffff })
  const size = maxSize ?? limits().msgmax
  const flags = (except ? M.MSG_EXCEPT : 0) | (truncate ? M.MSG_NOERROR : 0)
  return sys(`msg id ${id}`, () => native.msgReceive(id, type, size, flags, uid, gid))
}

/**
 * The message at a 0-based position, left in the queue (msgrcv with
 * MSG_COPY), or null past the last one. ENOSYS on a kernel without
 * CONFIG_CHECKPOINT_RESTORE. A queue that others send to or receive from
 * meanwhile may shift under the position.
 */
export function peek(id: number, index = 0, options: AsOptions = {}): Message | null {
  const [uid, gid] = checkAs('msg.peek', options)
  checkMsgId(id)
  checkCount('index', index)
  return sys(`msg id ${id}`, () => native.msgReceive(id, index, copyBufferSize(id, uid, gid), M.MSG_COPY, uid, gid))
}

/** What {@link peekAll} saw: the queue's stat before and after the copy, and every message. */
export interface QueueCopy {
  before: MsgStat
  after: MsgStat
  messages: Message[]
  /**
   * No message was sent or received during the copy (qnum, stime and rtime
   * unchanged): the messages are the queue as it was. When false, a message
   * may be missing or counted twice.
   */
  consistent: boolean
}

/** A copy of a queue as the kernel gave it: every message's type and size, their bytes one after another. */
export interface RawQueueCopy extends Omit<QueueCopy, 'messages'> {
  types: number[]
  sizes: number[]
  data: Buffer
}

/**
 * Every message in queue order, left in the queue (MSG_COPY, one position
 * after another), with the stat before and after to tell whether the queue
 * changed meanwhile. The Buffers of the messages share one allocation.
 */
export function peekAll(id: number, options: AsOptions = {}): QueueCopy {
  const [uid, gid] = checkAs('msg.peekAll', options)
  checkMsgId(id)
  const { types, sizes, data, ...rest } = copyRaw(id, uid, gid)
  const messages: Message[] = []
  let at = 0
  types.forEach((type, i) => {
    messages.push({ type, data: data.subarray(at, at + sizes[i]!) })
    at += sizes[i]!
  })
  return { ...rest, messages }
}

/**
 * {@link peekAll} without a Buffer per message (arguments unchecked): a
 * snapshot packs thousands of messages straight from the kernel's copy.
 */
export function copyRaw(id: number, uid: number, gid: number): RawQueueCopy {
  const raw = sys(`msg id ${id}`, () => {
    const { cbytes, qnum } = native.msgStat(id, uid, gid)
    // Twice the average message first (the kernel copies in the whole buffer on each call), the largest possible when one is longer.
    return native.msgCopyAll(id, bufferFor(cbytes), Math.max(64, 2 * Math.ceil(cbytes / Math.max(qnum, 1))), uid, gid)
  })
  const before = toStat(raw.before)
  const after = toStat(raw.after)
  const consistent = before.qnum === after.qnum && before.stime === after.stime && before.rtime === after.rtime && raw.types.length === after.qnum
  return { before, after, consistent, types: raw.types, sizes: raw.sizes, data: raw.data }
}

/**
 * MSG_COPY fails with E2BIG when the buffer is smaller than the message:
 * a message is at most the msgmax of when it was sent, and never more than
 * the bytes the queue holds now.
 */
function copyBufferSize(id: number, uid: number, gid: number): number {
  return bufferFor(sys(`msg id ${id}`, () => native.msgStat(id, uid, gid)).cbytes)
}

function bufferFor(cbytes: number): number {
  return Math.max(limits().msgmax, Math.min(cbytes, 0x7fffffff))
}

/** Options of {@link set}. */
export interface SetOptions {
  /** New owner uid / gid. */
  uid?: number
  gid?: number
  /** New permission bits (0..0o777). */
  mode?: number
  /** Most bytes the queue may hold; above kernel.msgmnb needs CAP_SYS_RESOURCE (EPERM). */
  qbytes?: number
  /** Act as this uid/gid (IPC_SET needs the owner, the creator or CAP_SYS_ADMIN). */
  asUid?: number
  asGid?: number
}

/** IPC_SET: change the owner uid/gid, the permission bits and the queue's size.
 * The fields not given are kept: they are read with IPC_STAT, which needs
 * read permission (EACCES without it); giving every field needs none.
 */
export function set(id: number, options: SetOptions): void {
  checkOptions('msg.set', options, ['uid', 'gid', 'mode', 'qbytes', 'asUid', 'asGid'])
  checkMsgId(id)
  const uid = checkId('uid', options.uid)
  const gid = checkId('gid', options.gid)
  const mode = options.mode === undefined ? -1 : checkMode('mode', options.mode)
  const qbytes = options.qbytes === undefined ? -1 : checkCount('qbytes', options.qbytes, { max: 0xffffffff })
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`msg id ${id}`, () => native.msgSet(id, uid, gid, mode, qbytes, asUid, asGid))
}

/** IPC_RMID: remove the queue and its messages at once; waiting processes get EIDRM. */
export function remove(id: number, options: { asUid?: number; asGid?: number } = {}): void {
  checkOptions('msg.remove', options, ['asUid', 'asGid'])
  checkMsgId(id)
  const asUid = checkId('asUid', options.asUid)
  const asGid = checkId('asGid', options.asGid)
  sys(`msg id ${id}`, () => native.msgRemove(id, asUid, asGid))
}

/** The namespace's limits and usage. */
export interface Limits {
  /** Largest message, bytes (kernel.msgmax). */
  msgmax: number
  /** A new queue's qbytes, and the most a process without CAP_SYS_RESOURCE may set (kernel.msgmnb). */
  msgmnb: number
  /** Most queues in the namespace (kernel.msgmni). */
  msgmni: number
  /** Queues, messages and bytes of messages now. */
  queues: number
  messages: number
  bytes: number
}

/** The namespace's kernel.msgmax, msgmnb, msgmni and usage (IPC_INFO + MSG_INFO). */
export function limits(): Limits {
  const raw = sys('msg limits', () => native.msgLimits())
  return { msgmax: raw.msgmax, msgmnb: raw.msgmnb, msgmni: raw.msgmni, queues: raw.usedIds, messages: raw.messages, bytes: raw.bytes }
}
