/**
 * Every field of a GENERATION or `.meta` record checked before restore makes
 * a single system call with it. A record whose CRC matches is not therefore
 * sane: the CRC is not authentication, and a forged record with a recomputed
 * CRC (a cuid of 1.5, 4294967295 or 2^40, a uid of −1) must be refused as
 * damage up front — never found out halfway, after segments were created,
 * by a call that then also fails to undo them.
 */
import { KIND_NAMES, NAMED_KINDS, type KindName } from '../kinds/kind'
import { native } from '../native'
import { CHUNK_DATA, CHUNK_ENTRY_BYTES, CHUNK_ZERO, type GenerationRecord, type SegmentRecord } from './format'
import { StateFileError } from './files'

/** uid_t/gid_t values a segment may have: (uid_t)-1 means "no change" to the kernel, so it is out. */
const MAX_ID = 4294967294
/** Segment ids are non-negative ints. */
const MAX_SHMID = 2 ** 31 - 1
/** Largest size restore accepts (the kernel's own limit is below this on every machine). */
const MAX_SIZE = Number.MAX_SAFE_INTEGER

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
}

/** CRC-32C of `length` zero bytes (a zero chunk's CRC), by length: chunks are of a few lengths. */
const zeroCrcs = new Map<number, number>()
function zeroCrc(length: number): number {
  let crc = zeroCrcs.get(length)
  if (crc === undefined) {
    crc = native.crc32c(Buffer.alloc(length))
    if (zeroCrcs.size < 64) zeroCrcs.set(length, crc)
  }
  return crc
}

/**
 * The problems of a chunk table whose length is right: a type other than zero
 * or data, reserved bytes set, a zero chunk whose CRC is not that of zeros (a
 * data chunk retyped as zero would otherwise come back as zeros, unchecked).
 */
function chunkTableProblems(table: Buffer, size: number, chunkSize: number): string[] {
  const p: string[] = []
  for (let i = 0; i * CHUNK_ENTRY_BYTES < table.length && p.length < 3; i++) {
    const at = i * CHUNK_ENTRY_BYTES
    const type = table[at + 4]!
    if (type !== CHUNK_ZERO && type !== CHUNK_DATA) p.push(`chunk ${i} has type ${type} (0 zero, 1 data)`)
    else if (table[at + 5] || table[at + 6] || table[at + 7]) p.push(`chunk ${i} has reserved bytes set`)
    else if (type === CHUNK_ZERO && table.readUInt32LE(at) !== zeroCrc(Math.min(chunkSize, size - i * chunkSize))) {
      p.push(`chunk ${i} is typed zero but its CRC is not that of zero bytes`)
    }
  }
  return p
}

function base64Bytes(v: unknown): number | undefined {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) return undefined
  return Buffer.from(v, 'base64').length
}

/** The problems of one segment record (empty: sane). */
export function segmentProblems(r: SegmentRecord): string[] {
  const p: string[] = []
  const bad = (field: string, why: string) => p.push(`${field} ${JSON.stringify((r as unknown as Record<string, unknown>)[field])} ${why}`)
  if (typeof r !== 'object' || r === null) return ['is not an object']
  if (typeof r.key !== 'string' || !/^0x[0-9a-f]{8}$/.test(r.key)) bad('key', 'is not a key (0x%08x)')
  if (!isInt(r.id, 0, MAX_SHMID)) bad('id', `is not a segment id (0..${MAX_SHMID})`)
  if (!isInt(r.size, 1, MAX_SIZE)) bad('size', 'is not a size in bytes')
  if (!isInt(r.mode, 0, 0o777)) bad('mode', 'is not a mode (0..0777)')
  for (const f of ['uid', 'gid', 'cuid', 'cgid'] as const) if (!isInt(r[f], 0, MAX_ID)) bad(f, `is not a user or group id (0..${MAX_ID})`)
  if (!isInt(r.pageSize, 4096, 2 ** 40) || (r.pageSize & (r.pageSize - 1)) !== 0) bad('pageSize', 'is not a page size (a power of two, at least 4096)')
  if (typeof r.hugetlb !== 'boolean') bad('hugetlb', 'is not true or false')
  if (!isInt(r.chunkSize, 4096, 2 ** 40) || (isInt(r.pageSize, 1, 2 ** 40) && r.chunkSize % r.pageSize !== 0)) bad('chunkSize', 'is not a multiple of the page size')
  const count = isInt(r.size, 1, MAX_SIZE) && isInt(r.chunkSize, 1, 2 ** 40) ? Math.ceil(r.size / r.chunkSize) : undefined
  if (count !== undefined && r.chunkCount !== count) bad('chunkCount', `is not size / chunkSize rounded up (${count})`)
  if (count !== undefined && base64Bytes(r.chunks) !== count * CHUNK_ENTRY_BYTES) bad('chunks', `is not ${count * CHUNK_ENTRY_BYTES} bytes of base64`)
  else if (count !== undefined) p.push(...chunkTableProblems(Buffer.from(r.chunks, 'base64'), r.size, r.chunkSize).map((x) => `chunks: ${x}`))
  if (r.hashes !== undefined && count !== undefined && base64Bytes(r.hashes) !== count * 16) bad('hashes', `is not ${count * 16} bytes of base64`)
  for (const f of ['dataChunks', 'zeroChunks'] as const) if (!isInt(r[f], 0, count ?? MAX_SIZE)) bad(f, 'is not a chunk count')
  if (typeof r.data !== 'string') bad('data', 'is not a file name')
  return p
}

/** Throw a StateFileError (damage) naming `file` when the record is not sane. */
export function checkSegmentRecord(file: string, r: SegmentRecord): void {
  const p = segmentProblems(r)
  if (p.length) throw new StateFileError(file, `is not a sane record of segment ${typeof r?.key === 'string' ? r.key.slice(0, 10) : '?'}: ${p.join('; ')}`)
}

/** The kinds an `objects` record may have (segments have records of their own). */
const OBJECT_KINDS: readonly string[] = KIND_NAMES.filter((k) => k !== 'shm')
/** The attributes each kind's restore reads (src/kinds/*.ts). */
const ATTRS_NEEDED: Record<string, string[]> = {
  sem: ['nsems'],
  msg: ['qbytes', 'qnum', 'cbytes', 'biggest'],
  mqueue: ['maxmsg', 'msgsize', 'curmsgs', 'biggest'],
  'posix-shm': ['size', 'data', 'runs'],
}

/** The problems of one object record of any kind but segments (GENERATION's `objects.records`). */
function objectProblems(o: Record<string, unknown>): string[] {
  const p: string[] = []
  const bad = (field: string, why: string) => p.push(`${field} ${JSON.stringify(o[field])} ${why}`)
  if (!OBJECT_KINDS.includes(o.kind as string)) bad('kind', `is not ${OBJECT_KINDS.join(', ')}`)
  const named = NAMED_KINDS.has(o.kind as KindName)
  // POSIX objects are known by name ("/app.state"), and their id is an inode number (never used to restore).
  if (named) {
    if (typeof o.key !== 'string' || !/^\/[^/\0]{1,255}$/.test(o.key) || o.key === '/.' || o.key === '/..') bad('key', 'is not a POSIX object name (/NAME)')
    if (!isInt(o.id, 0, MAX_SIZE)) bad('id', 'is not an inode number')
  } else {
    if (typeof o.key !== 'string' || !/^0x[0-9a-f]{8}$/.test(o.key)) bad('key', 'is not a key (0x%08x)')
    if (!isInt(o.id, 0, MAX_SHMID)) bad('id', `is not an id (0..${MAX_SHMID})`)
  }
  if (!isInt(o.mode, 0, 0o777)) bad('mode', 'is not a mode (0..0777)')
  for (const f of ['uid', 'gid', 'cuid', 'cgid']) if (!isInt(o[f], 0, MAX_ID)) bad(f, `is not a user or group id (0..${MAX_ID})`)
  for (const f of ['offset', 'length']) if (!isInt(o[f], 0, MAX_SIZE)) bad(f, 'is not a byte count')
  if (typeof o.crc32c !== 'string' || !/^[0-9a-f]{8}$/.test(o.crc32c)) bad('crc32c', 'is not 8 hex digits')
  const attrs = o.attrs as Record<string, unknown> | null
  if (typeof attrs !== 'object' || attrs === null || Array.isArray(attrs)) bad('attrs', 'is not an object')
  else {
    // Every attribute is a count (msg_qbytes may pass INT_MAX with CAP_SYS_RESOURCE).
    const need = ATTRS_NEEDED[o.kind as string] ?? []
    for (const [k, v] of Object.entries(attrs)) if (!isInt(v, 0, MAX_SIZE)) p.push(`attrs.${k} ${JSON.stringify(v)} is not a count`)
    for (const k of need) if (!(k in attrs)) p.push(`attrs.${k} is missing`)
  }
  return p
}

/** The problems of GENERATION's `objects` section (absent: none). */
function objectsProblems(section: unknown): string[] {
  if (section === undefined) return []
  const s = section as Record<string, unknown>
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return ['objects is not an object']
  const p: string[] = []
  if (typeof s.data !== 'string') p.push(`objects.data ${JSON.stringify(s.data)} is not a file name`)
  if (!isInt(s.bytes, 0, MAX_SIZE)) p.push(`objects.bytes ${JSON.stringify(s.bytes)} is not a byte count`)
  if (!Array.isArray(s.records)) return [...p, 'objects.records is not a list']
  for (const f of ['unsaved', 'kinds']) if (s[f] !== undefined && !Array.isArray(s[f])) p.push(`objects.${f} is not a list`)
  if (s.checkpoint !== undefined && typeof s.checkpoint !== 'boolean') p.push(`objects.checkpoint ${JSON.stringify(s.checkpoint)} is not true or false`)
  if (s.limits !== undefined && (typeof s.limits !== 'object' || s.limits === null)) p.push('objects.limits is not an object')
  const names = new Set<string>()
  for (const [i, rec] of s.records.entries()) {
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) {
      p.push(`object ${i} is not an object`)
      continue
    }
    p.push(...objectProblems(rec).map((x) => `object ${i}: ${x}`))
    // One record per kind and key (IPC_PRIVATE: per id): a second would fail halfway with EEXIST.
    const name = rec.key === '0x00000000' ? `${rec.kind} id ${rec.id}` : `${rec.kind} ${rec.key}`
    if (names.has(name)) p.push(`${name} is listed twice`)
    names.add(name)
  }
  return p
}

/** Throw a StateFileError (damage) naming `file` when GENERATION's segment list is not sane. */
export function checkGenerationRecord(file: string, r: GenerationRecord): void {
  const p: string[] = []
  if (typeof r !== 'object' || r === null || !Array.isArray(r.segments)) {
    throw new StateFileError(file, 'is not a sane generation record: no segment list')
  }
  // Read after every object is in place (the warnings of a partial generation): a bad one must not fail the restore there.
  if (r.unsaved !== undefined && (!Array.isArray(r.unsaved) || r.unsaved.some((u) => typeof u !== 'object' || u === null))) p.push('unsaved is not a list of records')
  const keys = new Set<string>()
  const ids = new Set<number>()
  for (const [i, s] of r.segments.entries()) {
    if (typeof s !== 'object' || s === null) {
      p.push(`segment ${i} is not an object`)
      continue
    }
    if (typeof s.key !== 'string' || !/^0x[0-9a-f]{8}$/.test(s.key)) p.push(`segment ${i}: key ${JSON.stringify(s.key)} is not a key`)
    if (!isInt(s.id, 0, MAX_SHMID)) p.push(`segment ${i}: id ${JSON.stringify(s.id)} is not a segment id`)
    if (!isInt(s.size, 1, MAX_SIZE)) p.push(`segment ${i}: size ${JSON.stringify(s.size)} is not a size`)
    // A packed segment's record is in GENERATION itself: checked like a .meta.
    if (s.packed !== undefined) {
      if (typeof s.packed !== 'object' || s.packed === null) p.push(`segment ${i}: packed is not a record`)
      else p.push(...segmentProblems(s.packed).map((x) => `segment ${i} (packed): ${x}`))
    }
    // One record per key (IPC_PRIVATE: per id): a second would fail halfway with EEXIST.
    if (s.key !== '0x00000000') {
      if (keys.has(s.key)) p.push(`key ${s.key} is listed twice`)
      keys.add(s.key)
    } else {
      if (ids.has(s.id)) p.push(`IPC_PRIVATE id ${s.id} is listed twice`)
      ids.add(s.id)
    }
  }
  p.push(...objectsProblems(r.objects))
  if (p.length) throw new StateFileError(file, `is not a sane generation record: ${p.join('; ')}`)
}
