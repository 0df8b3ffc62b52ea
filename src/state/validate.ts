/**
 * Every field of a GENERATION or `.meta` record checked before restore makes
 * a single system call with it. A record whose CRC matches is not therefore
 * sane: the CRC is not authentication, and a forged record with a recomputed
 * CRC (a cuid of 1.5, 4294967295 or 2^40, a uid of −1) must be refused as
 * damage up front — never found out halfway, after segments were created,
 * by a call that then also fails to undo them.
 */
import { CHUNK_ENTRY_BYTES, type GenerationRecord, type SegmentRecord } from './format'
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

/** Throw a StateFileError (damage) naming `file` when GENERATION's segment list is not sane. */
export function checkGenerationRecord(file: string, r: GenerationRecord): void {
  const p: string[] = []
  if (typeof r !== 'object' || r === null || !Array.isArray(r.segments)) {
    throw new StateFileError(file, 'is not a sane generation record: no segment list')
  }
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
    // One record per key (IPC_PRIVATE: per id): a second would fail halfway with EEXIST.
    if (s.key !== '0x00000000') {
      if (keys.has(s.key)) p.push(`key ${s.key} is listed twice`)
      keys.add(s.key)
    } else {
      if (ids.has(s.id)) p.push(`IPC_PRIVATE id ${s.id} is listed twice`)
      ids.add(s.id)
    }
  }
  if (p.length) throw new StateFileError(file, `is not a sane generation record: ${p.join('; ')}`)
}
