/**
 * POSIX message queues as an IPC object kind: name, mq_maxmsg, mq_msgsize,
 * mode, owner, and every message with its priority, in delivery order
 * (highest priority first, first-in first-out within one).
 *
 * Queues belong to the IPC namespace, but they are listed through its
 * `mqueue` file system, which runc and Docker mount at /dev/mqueue. That
 * mount can be another namespace's (after a bare `unshare --ipc`, /dev/mqueue
 * still shows the old namespace's queues, and remounting needs
 * CAP_SYS_ADMIN): a probe queue created here must show up there, or the
 * queues cannot be listed, and the log says so.
 *
 * There is no non-destructive read of a POSIX queue, and a message sent back
 * fires the mq_notify registration of whoever waits on an empty queue. So
 * queues are saved at the final snapshot only (the app has exited: no
 * registration is left, no reader races the copy), or when `--kind mqueue`
 * asks for it: every message is received and at once sent back with its
 * priority (native/mqueue.cc), which leaves the queue as it was, even when
 * the snapshot later fails. A queue with an mq_notify registration (a process
 * still waits on it) is not touched and recorded unsaved.
 *
 * Packed contents, per message: priority (u32 LE), length (u32 LE), bytes.
 * Restored with mq_open(O_CREAT|O_EXCL) as the owner (RLIMIT_MSGQUEUE is
 * charged to the creating user), the messages sent in order, then the saved
 * mode. mq_maxmsg above fs.mqueue.msg_max or mq_msgsize above msgsize_max
 * needs CAP_SYS_RESOURCE (not in Docker's defaults): without it the
 * attribute is lowered to the limit when the messages fit (said so), else the
 * restore refuses. What cannot come back: mq_notify registrations, the
 * inode number, times.
 */
import fs from 'node:fs'
import path from 'node:path'
import { hasCode, sys, systemError } from '../errors'
import { SELF } from '../identity'
import { native } from '../native'
import { CAP, effectiveCapabilities, hasCapability } from '../system'
import { inMemory, type IpcObject, type Kind, type KindList, type ObjectRecord } from './kind'

export const DEV_MQUEUE = '/dev/mqueue'
const MQUEUE_MAGIC = 0x19800202
const O = fs.constants

export interface LiveMqueue extends IpcObject {
  kind: 'mqueue'
  name: string
  /** Bytes of messages (QSIZE of the queue's file). */
  qsize: number
  /** The pid registered with mq_notify (0: none). */
  notifyPid: number
}

export interface PosixMessage {
  prio: number
  data: Buffer
}

export function packPosixMessages(messages: PosixMessage[]): Buffer {
  const out = Buffer.alloc(messages.reduce((n, m) => n + 8 + m.data.length, 0))
  let at = 0
  for (const m of messages) {
    out.writeUInt32LE(m.prio, at)
    out.writeUInt32LE(m.data.length, at + 4)
    m.data.copy(out, at + 8)
    at += 8 + m.data.length
  }
  return out
}

export function unpackPosixMessages(payload: Buffer): PosixMessage[] {
  const out: PosixMessage[] = []
  let at = 0
  while (at < payload.length) {
    if (at + 8 > payload.length) throw new Error(`a message header is cut at byte ${at}`)
    const prio = payload.readUInt32LE(at)
    const len = payload.readUInt32LE(at + 4)
    if (at + 8 + len > payload.length) throw new Error(`message ${out.length} runs past the end`)
    out.push({ prio, data: payload.subarray(at + 8, at + 8 + len) })
    at += 8 + len
  }
  return out
}

/** fs.mqueue.* of this IPC namespace. */
export function mqueueLimits(): Record<string, number> {
  const out: Record<string, number> = {}
  for (const k of ['msg_max', 'msgsize_max', 'queues_max', 'msg_default', 'msgsize_default']) {
    try {
      out[k] = Number(fs.readFileSync(`/proc/sys/fs/mqueue/${k}`, 'utf8').trim())
    } catch {
      // an older kernel without it
    }
  }
  return out
}

let probed: string | undefined | null = null

/**
 * Why /dev/mqueue cannot list this namespace's queues (undefined: it can):
 * missing, not an mqueue file system, or another namespace's (a probe queue
 * created here does not show up in it). Once per process: a process stays in
 * its IPC namespace.
 */
export function mqueueUnavailable(): string | undefined {
  if (probed !== null) return probed
  probed = probe()
  return probed
}

function probe(): string | undefined {
  try {
    if (fs.statfsSync(DEV_MQUEUE).type !== MQUEUE_MAGIC) return `${DEV_MQUEUE} is not an mqueue file system: POSIX message queues cannot be listed (mount -t mqueue mqueue ${DEV_MQUEUE}; runc and Docker mount it)`
  } catch {
    return `no ${DEV_MQUEUE} here: POSIX message queues cannot be listed (mount -t mqueue mqueue ${DEV_MQUEUE}; runc and Docker mount it)`
  }
  const name = `/shmkeep-probe-${process.pid}-${Math.random().toString(36).slice(2, 10)}`
  let fd: number
  try {
    fd = native.mqOpen(name, O.O_RDONLY | O.O_CREAT | O.O_EXCL, 0o600, 1, 1, -1, -1)
  } catch (e) {
    return `a probe queue cannot be created (${(e as Error).message}): POSIX message queues cannot be listed`
  }
  fs.closeSync(fd)
  const seen = fs.existsSync(path.join(DEV_MQUEUE, name.slice(1)))
  try {
    native.mqUnlink(name, -1, -1)
  } catch {
    // gone already
  }
  return seen ? undefined : `the mqueue file system at ${DEV_MQUEUE} belongs to another IPC namespace (a bare unshare --ipc keeps the old mount; remounting needs CAP_SYS_ADMIN): this namespace's POSIX message queues cannot be listed`
}

function openQueue(name: string, flags: number): number {
  return sys(`POSIX message queue ${name}`, () => native.mqOpen(name, flags, 0, 0, 0, -1, -1))
}

function unlinkQueue(name: string): void {
  sys(`POSIX message queue ${name}`, () => native.mqUnlink(name, -1, -1))
}

export const mqueueKind: Kind<LiveMqueue> = {
  name: 'mqueue',
  noun: 'POSIX message queue',
  named: true,
  finalOnly: true,

  list(): KindList<LiveMqueue> {
    const why = mqueueUnavailable()
    if (why) return { objects: [], complete: false, unavailable: why }
    const objects: LiveMqueue[] = []
    for (const n of fs.readdirSync(DEV_MQUEUE).sort()) {
      try {
        const p = path.join(DEV_MQUEUE, n)
        const st = fs.lstatSync(p)
        if (!st.isFile()) continue
        const text = fs.readFileSync(p, 'utf8')
        const qsize = Number(/QSIZE:\s*(\d+)/.exec(text)?.[1] ?? 0)
        const notifyPid = Number(/NOTIFY_PID:\s*(\d+)/.exec(text)?.[1] ?? 0)
        objects.push({ kind: 'mqueue', key: 0, id: st.ino, name: '/' + n, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, cuid: st.uid, cgid: st.gid, ctime: Math.floor(st.ctimeMs / 1000), bytes: qsize, qsize, notifyPid })
      } catch {
        // removed meanwhile
      }
    }
    return { objects, complete: true, where: DEV_MQUEUE }
  },

  readAs: () => SELF,

  read(obj) {
    if (obj.notifyPid) return { unsaved: `process ${obj.notifyPid} is registered with mq_notify on it: the app has not exited, and taking the messages out would wake it`, errno: 'EBUSY' }
    let fd: number
    try {
      fd = openQueue(obj.name, O.O_RDWR)
    } catch (e) {
      return { unsaved: (e as Error).message, errno: hasCode(e, 'ENOENT') ? 'EIDRM' : (e as { code?: string }).code }
    }
    try {
      if (fs.fstatSync(fd).ino !== obj.id) return { unsaved: 'replaced by another queue while the snapshot ran', errno: 'EIDRM' }
      const attr = sys(`POSIX message queue ${obj.name}`, () => native.mqAttr(fd))
      const r = native.mqTakeAll(fd, attr.msgsize)
      if (r.error) {
        const lost = r.prios.length - r.resent
        return { unsaved: `${(systemError(r.error, `POSIX message queue ${obj.name}`) as Error).message}${lost ? `: ${lost} of its ${r.prios.length} messages could not be sent back and are LOST` : ''}`, errno: 'EIO' }
      }
      const messages: PosixMessage[] = []
      let at = 0
      r.sizes.forEach((size, i) => {
        messages.push({ prio: r.prios[i]!, data: r.data.subarray(at, at + size) })
        at += size
      })
      const biggest = r.sizes.reduce((n, s) => Math.max(n, s), 0)
      return { attrs: { maxmsg: attr.maxmsg, msgsize: attr.msgsize, curmsgs: messages.length, biggest }, info: { ino: obj.id, ctime: obj.ctime }, payload: packPosixMessages(messages) }
    } finally {
      fs.closeSync(fd)
    }
  },

  diffAttrs: { curmsgs: 'messages', maxmsg: 'mq_maxmsg', msgsize: 'mq_msgsize' },

  /** mq_getattr through a descriptor: opening a queue takes nothing out of it. */
  peek(obj) {
    const notCompared = 'messages not compared: a POSIX queue cannot be read without taking them out'
    let fd: number
    try {
      fd = openQueue(obj.name, O.O_RDONLY | O.O_NONBLOCK)
    } catch (e) {
      return { error: (e as Error).message }
    }
    try {
      const a = sys(`POSIX message queue ${obj.name}`, () => native.mqAttr(fd))
      return { attrs: { curmsgs: a.curmsgs, maxmsg: a.maxmsg, msgsize: a.msgsize }, notCompared }
    } catch (e) {
      return { error: (e as Error).message }
    } finally {
      fs.closeSync(fd)
    }
  },

  check(rec, payload) {
    let messages: PosixMessage[]
    try {
      messages = unpackPosixMessages(inMemory(payload))
    } catch (e) {
      return (e as Error).message
    }
    if (messages.length !== rec.attrs.curmsgs) return `${messages.length} messages where ${rec.attrs.curmsgs} were saved`
    if (messages.some((m) => m.data.length > rec.attrs.msgsize!)) return `a message is longer than mq_msgsize ${rec.attrs.msgsize}`
    if (!/^\/[^/]{1,254}$/.test(rec.key)) return `${JSON.stringify(rec.key)} is not a POSIX queue name`
    return undefined
  },

  limits: mqueueLimits,

  fit(records) {
    const l = mqueueLimits()
    const resource = hasCapability(CAP.SYS_RESOURCE, effectiveCapabilities())
    const problems: string[] = []
    const notKept = new Map<ObjectRecord, string>()
    if (!resource && l.queues_max !== undefined) {
      const live = mqueueUnavailable() ? 0 : fs.readdirSync(DEV_MQUEUE).length
      if (live + records.length > l.queues_max) problems.push(`${records.length} POSIX message queues would exceed fs.mqueue.queues_max (${l.queues_max}, ${live} in use) without CAP_SYS_RESOURCE`)
    }
    for (const r of records) {
      if (resource) continue
      const { maxmsg = 0, msgsize = 0, curmsgs = 0, biggest = 0 } = r.attrs
      const lowered: string[] = []
      if (l.msg_max !== undefined && maxmsg > l.msg_max) {
        if (curmsgs > l.msg_max) problems.push(`POSIX message queue ${r.key} holds ${curmsgs} messages, above fs.mqueue.msg_max (${l.msg_max}) here, and raising mq_maxmsg needs CAP_SYS_RESOURCE: raise fs.mqueue.msg_max (docker run --sysctl) or add the capability`)
        else lowered.push(`mq_maxmsg ${maxmsg} lowered to fs.mqueue.msg_max (${l.msg_max})`)
      }
      if (l.msgsize_max !== undefined && msgsize > l.msgsize_max) {
        if (biggest > l.msgsize_max) problems.push(`POSIX message queue ${r.key} holds a message of ${biggest} bytes, above fs.mqueue.msgsize_max (${l.msgsize_max}) here: raise it (docker run --sysctl) or add CAP_SYS_RESOURCE`)
        else lowered.push(`mq_msgsize ${msgsize} lowered to fs.mqueue.msgsize_max (${l.msgsize_max})`)
      }
      if (lowered.length) notKept.set(r, `${lowered.join(', ')}: more needs CAP_SYS_RESOURCE`)
    }
    return { problems, notKept }
  },

  /** mq_open(O_CREAT|O_EXCL) as the owner, mode 0600, every message sent back in order; returns the inode. */
  create(rec, payload, as, { limits, resource }) {
    const cap = (v: number, limit: number | undefined) => (!resource && limit !== undefined && v > limit ? limit : v)
    const maxmsg = cap(rec.attrs.maxmsg!, limits.msg_max)
    const msgsize = cap(rec.attrs.msgsize!, limits.msgsize_max)
    const fd = sys(`POSIX message queue ${rec.key}`, () => native.mqOpen(rec.key, O.O_WRONLY | O.O_CREAT | O.O_EXCL, 0o600, maxmsg, msgsize, as.uid, as.gid))
    try {
      const ino = fs.fstatSync(fd).ino
      try {
        for (const m of unpackPosixMessages(inMemory(payload))) {
          if (!sys(`POSIX message queue ${rec.key}`, () => native.mqSend(fd, m.data, m.prio))) throw new Error(`POSIX message queue ${rec.key} is full before its ${rec.attrs.curmsgs} messages are back`)
        }
      } catch (e) {
        unlinkQueue(rec.key)
        throw e
      }
      return ino
    } finally {
      fs.closeSync(fd)
    }
  },

  finish(rec, id) {
    const fd = openQueue(rec.key, O.O_RDONLY)
    try {
      const st = fs.fstatSync(fd)
      if (st.ino !== id) throw new Error(`POSIX message queue ${rec.key} was replaced during the restore`)
      if (st.uid !== rec.uid || st.gid !== rec.gid) fs.fchownSync(fd, rec.uid, rec.gid)
      fs.fchmodSync(fd, rec.mode)
    } finally {
      fs.closeSync(fd)
    }
  },

  remove({ id, key }) {
    let fd: number
    try {
      fd = openQueue(key, O.O_RDONLY)
    } catch (e) {
      if (hasCode(e, 'ENOENT')) return
      throw e
    }
    let ours: boolean
    try {
      ours = fs.fstatSync(fd).ino === id
    } finally {
      fs.closeSync(fd)
    }
    if (ours) unlinkQueue(key)
  },
}
