/**
 * POSIX shared memory objects as an IPC object kind: every regular file of
 * the tmpfs mounted at /dev/shm (shm_open objects, and the `sem.*` files of
 * named semaphores) — name, size, mode, owner and contents, with holes kept
 * as holes (only the data runs that SEEK_DATA/SEEK_HOLE report are read and
 * stored). Directories, sockets, FIFOs and symlinks are skipped and named.
 *
 * /dev/shm belongs to the mount namespace, not the IPC namespace: a
 * per-container tmpfs under Docker and runc, per pod under Kubernetes (it
 * survives a container restart: the warm rule covers these objects too), the
 * machine's own on a host. So this kind is taken only when `--kind` names it
 * or shmkeep is PID 1 of its container (src/filter.ts), and the log says
 * which /dev/shm was used.
 *
 * Packed contents: size (u64 LE), run count (u32 LE), 0 (u32), then per run
 * offset and length (u64 LE each), then the bytes of every run in order.
 * Everything goes into the generation's objects.data: /dev/shm is a small
 * tmpfs (64 MiB in Docker), and its bytes count in the stop reserve as the
 * packed segments' do (see docs/FORMAT.md for the limit this sets). Never
 * whole in memory: a snapshot streams the data runs into the packed file in
 * pieces of 4 MiB (its CRC-32C computed as they go), a restore checks the
 * CRC piece by piece, then writes the runs from the packed file the same way.
 *
 * Restored under a temporary name (`.shmkeep-restore-PID-NAME`, mode 0600,
 * owned by root) with its data runs written at their offsets (the rest stays
 * holes); once every object of the restore is in place, each gets its owner
 * and mode and is linked to its name (link(2) never replaces an object that
 * appeared meanwhile) and the temporary name goes. What cannot come back:
 * the inode number, times, and mappings of processes (they are gone).
 */
import fs from 'node:fs'
import path from 'node:path'
import { humanSize } from '../log'
import { SELF } from '../identity'
import { native } from '../native'
import type { IpcObject, Kind, KindList, Payload, PayloadSink } from './kind'

/** Where POSIX shm objects are (glibc's shm_open: fixed, not configurable). */
export const DEV_SHM = '/dev/shm'
/** Prefix of the temporary names a restore creates its objects under. */
export const RESTORE_PREFIX = '.shmkeep-restore-'
const TMPFS_MAGIC = 0x01021994
/** Bytes of one data read (runs are read in pieces this big). */
const READ_PIECE = 4 << 20

export interface LivePosixShm extends IpcObject {
  kind: 'posix-shm'
  name: string
  size: number
}

function fileName(name: string): string {
  return name.replace(/^\//, '')
}

/** The temporary name of a restored object (this process, short enough for NAME_MAX). */
function tmpName(name: string, pid = process.pid): string {
  const base = fileName(name)
  const tail = base.length <= 180 ? base : `${native.crc32c(Buffer.from(base)).toString(16)}-${base.length}`
  return `${RESTORE_PREFIX}${pid}-${tail}`
}

function statfs(): { size: number; free: number; inodesFree: number; tmpfs: boolean } {
  const s = fs.statfsSync(DEV_SHM)
  return { size: s.blocks * s.bsize, free: s.bavail * s.bsize, inodesFree: s.ffree, tmpfs: s.type === TMPFS_MAGIC }
}

function mountNamespace(): string {
  try {
    return fs.readlinkSync('/proc/self/ns/mnt')
  } catch {
    return 'mount namespace unknown'
  }
}

function typeOf(d: fs.Dirent): string {
  if (d.isDirectory()) return 'a directory'
  if (d.isSymbolicLink()) return 'a symlink'
  if (d.isSocket()) return 'a socket'
  if (d.isFIFO()) return 'a FIFO'
  return 'not a regular file'
}

/** Header + runs table + data → the pieces of a packed payload. */
interface Parsed {
  size: number
  runs: Array<[number, number]>
  dataAt: number
}

/** Header and runs table (only they are read: the data may stay in the packed file). */
export function parsePayload(payload: Payload): Parsed {
  if (payload.length < 16) throw new Error(`${payload.length} bytes: shorter than the header`)
  const head = payload.subarray(0, 16)
  const size = Number(head.readBigUInt64LE(0))
  const n = head.readUInt32LE(8)
  const dataAt = 16 + 16 * n
  if (dataAt > payload.length) throw new Error(`${n} runs do not fit in ${payload.length} bytes`)
  const table = payload.subarray(16, dataAt)
  const runs: Array<[number, number]> = []
  let end = 0
  let bytes = 0
  for (let i = 0; i < n; i++) {
    const off = Number(table.readBigUInt64LE(16 * i))
    const len = Number(table.readBigUInt64LE(8 + 16 * i))
    if (off < end || len <= 0 || off + len > size) throw new Error(`run ${i} (${off}+${len}) overlaps, is empty or lies past the size ${size}`)
    end = off + len
    bytes += len
    runs.push([off, len])
  }
  if (dataAt + bytes !== payload.length) throw new Error(`${payload.length - dataAt} bytes of data for runs of ${bytes}`)
  return { size, runs, dataAt }
}

/** The data runs into the sink, one piece at a time through one buffer; false when the file ended early (it shrank). */
function copyRuns(fd: number, runs: Array<[number, number]>, sink: PayloadSink): boolean {
  const biggest = runs.reduce((n, [, len]) => Math.max(n, len), 0)
  const buf = Buffer.allocUnsafe(Math.min(READ_PIECE, biggest))
  for (const [off, len] of runs) {
    for (let done = 0; done < len; ) {
      const n = fs.readSync(fd, buf, 0, Math.min(len - done, buf.length), off + done)
      if (n === 0) return false
      sink.write(buf.subarray(0, n))
      done += n
    }
  }
  return true
}

/** Tries of a read whose file changed size meanwhile, before it is recorded unsaved. */
const READ_TRIES = 3

export const posixShmKind: Kind<LivePosixShm> = {
  name: 'posix-shm',
  noun: 'POSIX shm object',
  named: true,

  list(): KindList<LivePosixShm> {
    let entries: fs.Dirent[]
    try {
      entries = fs.readdirSync(DEV_SHM, { withFileTypes: true })
    } catch (e) {
      return { objects: [], complete: false, unavailable: `${DEV_SHM} cannot be read (${(e as Error).message})` }
    }
    const objects: LivePosixShm[] = []
    const skipped: string[] = []
    for (const d of entries) {
      if (d.name.startsWith(RESTORE_PREFIX)) continue // a restore's own, not the app's
      if (!d.isFile()) {
        skipped.push(`${d.name} (${typeOf(d)})`)
        continue
      }
      let st: fs.Stats
      try {
        st = fs.lstatSync(path.join(DEV_SHM, d.name))
      } catch {
        continue // removed meanwhile
      }
      objects.push({ kind: 'posix-shm', key: 0, id: st.ino, name: '/' + d.name, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, cuid: st.uid, cgid: st.gid, ctime: Math.floor(st.ctimeMs / 1000), bytes: st.size, size: st.size })
    }
    objects.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    let where = DEV_SHM
    try {
      const s = statfs()
      where = `${DEV_SHM} (${s.tmpfs ? 'tmpfs' : 'NOT a tmpfs'} of ${humanSize(s.size)}, ${humanSize(s.size - s.free)} used, ${mountNamespace()})`
    } catch {
      // where stays the path
    }
    return { objects, complete: true, skipped, where }
  },

  // Root in Docker keeps CAP_DAC_OVERRIDE: it reads a 0600 file of any uid.
  readAs: () => SELF,
  createAs: () => SELF,

  streams: true,

  /**
   * Header and runs table, then the data runs piece by piece into the sink
   * (one buffer of READ_PIECE, whatever the object's size); read again from
   * the start when the size changed meanwhile.
   */
  read(obj, _as, sink) {
    let lastChange = ''
    for (let attempt = 0; attempt < READ_TRIES; attempt++) {
      let fd: number
      try {
        fd = fs.openSync(path.join(DEV_SHM, fileName(obj.name)), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      } catch (e) {
        const code = (e as { code?: string }).code
        return { unsaved: (e as Error).message, errno: code === 'ENOENT' ? 'EIDRM' : code }
      }
      try {
        const before = fs.fstatSync(fd)
        if (before.ino !== obj.id || !before.isFile()) return { unsaved: 'replaced by another file while the snapshot ran', errno: 'EIDRM' }
        const size = before.size
        const flat = native.posixDataRuns(fd, size)
        const runs: Array<[number, number]> = []
        for (let i = 0; i < flat.length; i += 2) runs.push([flat[i]!, flat[i + 1]!])
        const data = runs.reduce((n, [, len]) => n + len, 0)
        const header = Buffer.alloc(16 + 16 * runs.length)
        header.writeBigUInt64LE(BigInt(size), 0)
        header.writeUInt32LE(runs.length, 8)
        runs.forEach(([off, len], i) => {
          header.writeBigUInt64LE(BigInt(off), 16 + 16 * i)
          header.writeBigUInt64LE(BigInt(len), 24 + 16 * i)
        })
        sink.write(header)
        const short = !copyRuns(fd, runs, sink)
        const after = fs.fstatSync(fd)
        if (!short && after.size === size) {
          return { attrs: { size, data, runs: runs.length }, info: { mtime: Math.floor(before.mtimeMs / 1000), ctime: Math.floor(before.ctimeMs / 1000), ino: before.ino }, streamed: header.length + data }
        }
        lastChange = `size ${size}→${after.size}`
        sink.restart()
      } catch (e) {
        return { unsaved: (e as Error).message, errno: (e as { code?: string }).code }
      } finally {
        fs.closeSync(fd)
      }
    }
    return { unsaved: `its size changed during each of ${READ_TRIES} reads (${lastChange}): stop or freeze the app for it to be saved`, errno: 'EBUSY' }
  },

  diffAttrs: { size: 'size' },

  check(rec, payload) {
    let p: Parsed
    try {
      p = parsePayload(payload)
    } catch (e) {
      return (e as Error).message
    }
    if (p.size !== rec.attrs.size) return `size ${p.size} where ${rec.attrs.size} was saved`
    if (!rec.key.startsWith('/') || rec.key.length < 2 || rec.key.slice(1).includes('/') || rec.key === '/.' || rec.key === '/..') return `${JSON.stringify(rec.key)} is not a POSIX shm name`
    return undefined
  },

  limits(): Record<string, number> {
    try {
      return { size: statfs().size }
    } catch {
      return {}
    }
  },

  fit(records) {
    if (records.length === 0) return { problems: [], notKept: new Map() }
    let s: ReturnType<typeof statfs>
    try {
      s = statfs()
    } catch (e) {
      return { problems: [`${DEV_SHM} cannot be used (${(e as Error).message})`], notKept: new Map() }
    }
    const page = 4096
    const need = records.reduce((n, r) => n + Math.ceil((r.attrs.data ?? 0) / page) * page, 0)
    const problems: string[] = []
    if (need > s.free) problems.push(`${records.length} POSIX shm object(s) need ${humanSize(need)} in ${DEV_SHM}, which has ${humanSize(s.free)} free of ${humanSize(s.size)}: give the container a larger /dev/shm (docker run --shm-size)`)
    if (records.length > s.inodesFree) problems.push(`${records.length} POSIX shm object(s) need as many inodes in ${DEV_SHM}, which has ${s.inodesFree} free`)
    return { problems, notKept: new Map() }
  },

  /** The data runs written at their offsets under a temporary name, mode 0600; returns its inode. */
  create(rec, payload) {
    const p = parsePayload(payload)
    const tmp = path.join(DEV_SHM, tmpName(rec.key))
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600)
    try {
      fs.fchmodSync(fd, 0o600) // whatever the umask
      fs.ftruncateSync(fd, p.size)
      // Piece by piece: a large object's data is read from the packed file as it is written here.
      let at = p.dataAt
      for (const [off, len] of p.runs) {
        for (let done = 0; done < len; ) {
          const piece = payload.subarray(at + done, at + Math.min(len, done + READ_PIECE))
          if (piece.length === 0) throw new Error(`its saved data ends before run ${off}+${len}`)
          for (let w = 0; w < piece.length; ) w += fs.writeSync(fd, piece, w, piece.length - w, off + done + w)
          done += piece.length
        }
        at += len
      }
      return fs.fstatSync(fd).ino
    } catch (e) {
      fs.rmSync(tmp, { force: true })
      throw e
    } finally {
      fs.closeSync(fd)
    }
  },

  /** Owner and mode, then the name: link(2) fails rather than replace an object that appeared meanwhile. */
  finish(rec) {
    const tmp = path.join(DEV_SHM, tmpName(rec.key))
    fs.chownSync(tmp, rec.uid, rec.gid)
    fs.chmodSync(tmp, rec.mode)
    try {
      fs.linkSync(tmp, path.join(DEV_SHM, fileName(rec.key)))
    } catch (e) {
      if ((e as { code?: string }).code === 'EEXIST') throw new Error(`POSIX shm object ${rec.key} appeared in ${DEV_SHM} during the restore: left alone`)
      throw e
    }
    fs.unlinkSync(tmp)
  },

  remove({ id, key }) {
    for (const file of [fileName(key), tmpName(key)]) {
      const p = path.join(DEV_SHM, file)
      try {
        if (fs.lstatSync(p).ino === id) fs.unlinkSync(p)
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e
      }
    }
  },

  cleanup(pid?: number) {
    const removed: string[] = []
    let names: string[]
    try {
      names = fs.readdirSync(DEV_SHM)
    } catch {
      return removed
    }
    const prefix = pid === undefined ? RESTORE_PREFIX : `${RESTORE_PREFIX}${pid}-`
    for (const n of names) {
      if (!n.startsWith(prefix)) continue
      fs.rmSync(path.join(DEV_SHM, n), { force: true })
      removed.push('/' + n)
    }
    return removed
  },
}

