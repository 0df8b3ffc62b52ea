/**
 * SysV semaphore sets as an IPC object kind: key, nsems, mode, owner,
 * creator, and every value (GETALL), packed as nsems little-endian u16.
 * Recreated with semget(IPC_CREAT|IPC_EXCL) as the creator, SETALL, then
 * IPC_SET. What cannot come back: sempid (SETALL makes it shmkeep's pid),
 * ncnt/zcnt (the waiters are gone), otime/ctime, and the SEM_UNDO
 * adjustments of processes (the kernel keeps them per process).
 */
import { hasCode } from '../errors'
import { native } from '../native'
import * as sem from '../sem'
import { disarmNextId, setNextId } from '../system'
import { inMemory, type IpcObject, type Kind } from './kind'

export interface LiveSem extends IpcObject {
  kind: 'sem'
  nsems: number
  otime: number
}

function toLive(s: sem.SemStat): LiveSem {
  return { kind: 'sem', key: s.key, id: s.id, mode: s.mode, uid: s.uid, gid: s.gid, cuid: s.cuid, cgid: s.cgid, ctime: s.ctime, bytes: 2 * s.nsems, nsems: s.nsems, otime: s.otime }
}

export const semKind: Kind<LiveSem> = {
  name: 'sem',
  noun: 'semaphore set',

  list() {
    const scan = sem.scan()
    return { objects: scan.sets.map(toLive), complete: scan.complete }
  },

  read(obj, as) {
    let values: number[]
    try {
      values = native.semGetAll(obj.id, obj.nsems, as.uid, as.gid)
    } catch (e) {
      return { unsaved: `GETALL: ${(e as Error).message}`, errno: hasCode(e, 'EINVAL', 'EIDRM') ? 'EIDRM' : undefined }
    }
    const payload = Buffer.alloc(2 * values.length)
    values.forEach((v, i) => payload.writeUInt16LE(v, 2 * i))
    return { attrs: { nsems: obj.nsems }, info: { otime: obj.otime, ctime: obj.ctime }, payload }
  },

  diffAttrs: { nsems: 'semaphores' },

  /** Which semaphores' values differ: "values #0 1 → 0, #3 5 → 7" (the first 8). */
  contentChange(_rec, saved, live) {
    const changed: string[] = []
    for (let i = 0; 2 * i + 1 < Math.min(saved.length, live.length); i++) {
      const [a, b] = [saved.readUInt16LE(2 * i), live.readUInt16LE(2 * i)]
      if (a !== b) changed.push(`#${i} ${a} → ${b}`)
    }
    const more = changed.length > 8 ? `, and ${changed.length - 8} more` : ''
    return `values ${changed.slice(0, 8).join(', ')}${more}`
  },

  check(rec, payload) {
    const nsems = rec.attrs.nsems
    if (!Number.isInteger(nsems) || nsems! < 1) return `nsems ${nsems} is not a count`
    if (payload.length !== 2 * nsems!) return `${payload.length} bytes of values for ${nsems} semaphores`
    return undefined
  },

  limits() {
    const l = sem.limits()
    return { semmsl: l.semmsl, semmns: l.semmns, semopm: l.semopm, semmni: l.semmni, semvmx: l.semvmx }
  },

  fit(records) {
    const l = sem.limits()
    const problems: string[] = []
    if (l.sets + records.length > l.semmni) problems.push(`${records.length} semaphore sets would exceed SEMMNI (${l.semmni}, ${l.sets} in use): raise kernel.sem`)
    const total = records.reduce((n, r) => n + (r.attrs.nsems ?? 0), 0)
    if (l.semaphores + total > l.semmns) problems.push(`${total} semaphores would exceed SEMMNS (${l.semmns}, ${l.semaphores} in use): raise kernel.sem`)
    for (const r of records) if ((r.attrs.nsems ?? 0) > l.semmsl) problems.push(`semaphore set ${r.key} has ${r.attrs.nsems} semaphores, above SEMMSL (${l.semmsl}): raise kernel.sem`)
    return { problems, notKept: new Map() }
  },

  /** semget as the creator (with the saved id when `chooseId`), then SETALL. */
  create(rec, payload, as, { chooseId }) {
    const flags = native.shmConstants.IPC_CREAT | native.shmConstants.IPC_EXCL | 0o600
    const key = parseInt(rec.key, 16)
    if (chooseId) setNextId(rec.id, 'sem')
    let id: number
    try {
      id = native.semGet(key, rec.attrs.nsems!, flags, as.uid, as.gid)
    } catch (e) {
      if (chooseId) disarmNextId('sem')
      throw e
    }
    const values: number[] = []
    const values16 = inMemory(payload)
    for (let i = 0; i < payload.length; i += 2) values.push(values16.readUInt16LE(i))
    try {
      native.semSetAll(id, values, as.uid, as.gid)
    } catch (e) {
      native.semRemove(id, as.uid, as.gid)
      throw e
    }
    return id
  },

  finish(rec, id, as) {
    native.semSet(id, rec.uid, rec.gid, rec.mode, as.uid, as.gid)
  },

  remove({ id }, as) {
    native.semRemove(id, as.uid, as.gid)
  },
}
