/**
 * SysV message queues as an IPC object kind: key, mode, owner, creator,
 * msg_qbytes, and every message (type and bytes, in queue order), read
 * without removing it (msgrcv MSG_COPY by position).
 *
 * Copying by position from a queue that is being used duplicates or skips
 * messages: a copy counts only when msg_qnum, msg_stime and msg_rtime are
 * the same before and after it (always so when the app is stopped or
 * frozen); otherwise it is tried again, then the queue is recorded unsaved.
 * Where MSG_COPY is missing (a kernel without CONFIG_CHECKPOINT_RESTORE) the
 * queue is recorded unsaved: nothing claims it saved.
 *
 * Packed contents, per message: type (i64 LE), length (u32 LE), bytes.
 * Restored with msgget(IPC_CREAT|IPC_EXCL) as the creator, IPC_SET of
 * msg_qbytes, every message sent back in order, then IPC_SET of mode and
 * owner. What cannot come back: lspid/lrpid, stime/rtime/ctime, and a
 * msg_qbytes above kernel.msgmnb without CAP_SYS_RESOURCE (kept at msgmnb
 * when the messages fit, else the restore refuses).
 */
import { isLineageQueue } from '../state/lineage'
import { hasCode } from '../errors'
import type { Identity } from '../identity'
import { native } from '../native'
import * as msg from '../msg'
import { CAP, disarmNextId, effectiveCapabilities, hasCapability, setNextId } from '../system'
import { inMemory, type IpcObject, type Kind, type ObjectRecord } from './kind'

export interface LiveMsg extends IpcObject {
  kind: 'msg'
  qnum: number
  qbytes: number
  lspid: number
  lrpid: number
  stime: number
  rtime: number
}

/** Copies of a queue tried before it is recorded unsaved. */
export const COPY_TRIES = 3

function toLive(q: msg.MsgStat): LiveMsg {
  return { kind: 'msg', key: q.key, id: q.id, mode: q.mode, uid: q.uid, gid: q.gid, cuid: q.cuid, cgid: q.cgid, ctime: q.ctime, bytes: q.cbytes, qnum: q.qnum, qbytes: q.qbytes, lspid: q.lspid, lrpid: q.lrpid, stime: q.stime, rtime: q.rtime }
}

/** A raw copy (types, sizes, their bytes one after another) → packed bytes, without a Buffer per message. */
function packRaw(types: number[], sizes: number[], data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(12 * types.length + data.length)
  let at = 0
  let from = 0
  types.forEach((type, i) => {
    // type > 0 and below 2^53: two 32-bit halves, no BigInt per message.
    out.writeUInt32LE(type % 2 ** 32, at)
    out.writeUInt32LE(Math.floor(type / 2 ** 32), at + 4)
    out.writeUInt32LE(sizes[i]!, at + 8)
    data.copy(out, at + 12, from, from + sizes[i]!)
    at += 12 + sizes[i]!
    from += sizes[i]!
  })
  return out
}

/** Packed bytes → messages (views into `payload`); throws on a malformed payload. */
export function unpackMessages(payload: Buffer): msg.Message[] {
  const out: msg.Message[] = []
  let at = 0
  while (at < payload.length) {
    if (at + 12 > payload.length) throw new Error(`a message header is cut at byte ${at}`)
    const type = payload.readInt32LE(at + 4) * 2 ** 32 + payload.readUInt32LE(at) // an i64 LE, without a BigInt per message
    const length = payload.readUInt32LE(at + 8)
    if (type < 1) throw new Error(`message ${out.length} has type ${type}`)
    if (at + 12 + length > payload.length) throw new Error(`message ${out.length} runs past the end`)
    out.push({ type, data: payload.subarray(at + 12, at + 12 + length) })
    at += 12 + length
  }
  return out
}

export const msgKind: Kind<LiveMsg> = {
  name: 'msg',
  noun: 'message queue',

  list() {
    const scan = msg.scan()
    // shmkeep's own lineage record is never saved, listed or filtered (src/state/lineage.ts).
    return { objects: scan.queues.filter((q) => !isLineageQueue(q)).map(toLive), complete: scan.complete }
  },

  read(obj, as) {
    let lastChange = ''
    for (let attempt = 0; attempt < COPY_TRIES; attempt++) {
      let copy: msg.RawQueueCopy
      try {
        copy = msg.copyRaw(obj.id, as.uid, as.gid)
      } catch (e) {
        if (hasCode(e, 'ENOSYS')) return { unsaved: 'this kernel has no msgrcv MSG_COPY (CONFIG_CHECKPOINT_RESTORE): its messages cannot be read without removing them', errno: 'ENOSYS' }
        return { unsaved: (e as Error).message, errno: hasCode(e, 'EINVAL', 'EIDRM') ? 'EIDRM' : (e as { code?: string }).code }
      }
      if (copy.consistent) {
        const { before } = copy
        const biggest = copy.sizes.reduce((n, size) => Math.max(n, size), 0)
        return {
          attrs: { qbytes: before.qbytes, qnum: before.qnum, cbytes: before.cbytes, biggest },
          info: { lspid: before.lspid, lrpid: before.lrpid, stime: before.stime, rtime: before.rtime, ctime: before.ctime },
          payload: packRaw(copy.types, copy.sizes, copy.data),
        }
      }
      lastChange = `qnum ${copy.before.qnum}→${copy.after.qnum}, stime ${copy.before.stime}→${copy.after.stime}, rtime ${copy.before.rtime}→${copy.after.rtime}`
    }
    return { unsaved: `messages were sent or received during each of ${COPY_TRIES} copies (${lastChange}): a copy by position would skip or repeat some; stop or freeze the app (--freeze) for this queue to be saved`, errno: 'EBUSY' }
  },

  diffAttrs: { qnum: 'messages', cbytes: 'bytes of messages', qbytes: 'msg_qbytes' },

  check(rec, payload) {
    let messages: msg.Message[]
    try {
      messages = unpackMessages(inMemory(payload))
    } catch (e) {
      return (e as Error).message
    }
    if (messages.length !== rec.attrs.qnum) return `${messages.length} messages where ${rec.attrs.qnum} were saved`
    const bytes = messages.reduce((n, m) => n + m.data.length, 0)
    if (bytes !== rec.attrs.cbytes) return `${bytes} bytes of messages where ${rec.attrs.cbytes} were saved`
    return undefined
  },

  limits() {
    const l = msg.limits()
    return { msgmax: l.msgmax, msgmnb: l.msgmnb, msgmni: l.msgmni }
  },

  fit(records, ctx) {
    const l = msg.limits()
    const problems: string[] = []
    const notKept = new Map<ObjectRecord, string>()
    if (l.queues + records.length > l.msgmni) problems.push(`${records.length} message queues would exceed MSGMNI (${l.msgmni}, ${l.queues} in use): raise kernel.msgmni`)
    const resource = hasCapability(CAP.SYS_RESOURCE, effectiveCapabilities())
    for (const r of records) {
      const { qbytes = 0, qnum = 0, cbytes = 0, biggest = 0 } = r.attrs
      if (biggest > l.msgmax) problems.push(`message queue ${r.key} holds a message of ${biggest} bytes, above MSGMAX (${l.msgmax}) here: raise kernel.msgmax`)
      if (qbytes > l.msgmnb && !resource) {
        if (cbytes > l.msgmnb || qnum > l.msgmnb) {
          problems.push(`message queue ${r.key} holds ${cbytes} bytes in ${qnum} messages; its msg_qbytes ${qbytes} is above kernel.msgmnb (${l.msgmnb}) here and raising it needs CAP_SYS_RESOURCE: raise kernel.msgmnb or add the capability`)
        } else {
          notKept.set(r, `msg_qbytes ${qbytes} is above kernel.msgmnb (${l.msgmnb}) here and raising it needs CAP_SYS_RESOURCE: the queue holds at most ${l.msgmnb} bytes`)
        }
      }
    }
    void ctx
    return { problems, notKept }
  },

  create(rec, payload, as, { chooseId, limits, resource }) {
    const flags = native.shmConstants.IPC_CREAT | native.shmConstants.IPC_EXCL | 0o600
    if (chooseId) setNextId(rec.id, 'msg')
    let id: number
    try {
      id = native.msgGet(parseInt(rec.key, 16), flags, as.uid, as.gid)
    } catch (e) {
      if (chooseId) disarmNextId('msg')
      throw e
    }
    try {
      const qbytes = rec.attrs.qbytes! > limits.msgmnb! && !resource ? limits.msgmnb! : rec.attrs.qbytes!
      if (qbytes !== limits.msgmnb) native.msgSet(id, -1, -1, -1, qbytes, as.uid, as.gid)
      // One native call for all of them: one identity switch, not one per message.
      const bytes = inMemory(payload)
      const messages = unpackMessages(bytes)
      const offsets = messages.map((m) => m.data.byteOffset - bytes.byteOffset)
      const sent = native.msgSendAll(id, bytes, messages.map((m) => m.type), offsets, messages.map((m) => m.data.length), as.uid, as.gid)
      if (sent < messages.length) throw new Error(`message queue ${rec.key}: the queue is full after ${sent} of its ${messages.length} messages`)
    } catch (e) {
      native.msgRemove(id, as.uid, as.gid)
      throw e
    }
    return id
  },

  finish(rec, id, as) {
    native.msgSet(id, rec.uid, rec.gid, rec.mode, -1, as.uid, as.gid)
  },

  remove({ id }, as) {
    native.msgRemove(id, as.uid, as.gid)
  },
}

