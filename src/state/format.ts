/**
 * The on-disk format of a generation (docs/FORMAT.md says the same in prose).
 *
 * ```
 * STATE/
 *   CURRENT                        name of the generation to restore ("gen-000000000042\n")
 *   LOCK                           flock: one writer at a time
 *   LINEAGE                        the random id that keys this state dir's lineage records (src/state/lineage.ts)
 *   RESTORING                      a restore in progress (so a killed one is cleaned up)
 *   gen-000000000042/
 *     GENERATION                   checked JSON: the generation and its list of segments
 *     0000162e-3.meta              checked JSON: one segment's metadata and chunk table
 *     0000162e-3.data              the segment's bytes, raw; all-zero chunks are holes
 *   .tmp-gen-000000000043/         a snapshot being written (removed if found stale)
 *   quarantine-gen-000000000041/   a generation that failed verification, kept aside
 * ```
 */
import type { ObjectsSection } from '../kinds'
import { formatKey } from '../keys'
import { StateFileError } from './files'

/** Version written. A reader refuses a version it does not know. */
export const FORMAT = 2
/**
 * Versions read. Format 1 (shmkeep 0.1's first generations) differs only in
 * GENERATION: `inconsistent` where format 2 has `consistency`, and no
 * `unsaved`; {@link upgradeGeneration} reads it as format 2.
 */
export const READABLE_FORMATS: readonly number[] = [1, 2]

/** Chunk types in a chunk table entry. */
export const CHUNK_ZERO = 0
export const CHUNK_DATA = 1
/** Bytes per chunk table entry: u32le CRC-32C, u8 type, 3 reserved zero bytes. */
export const CHUNK_ENTRY_BYTES = 8

export const GENERATION_FILE = 'GENERATION'
export const CURRENT_FILE = 'CURRENT'
export const LOCK_FILE = 'LOCK'
export const LIVE_FILE = 'LIVE'
export const RESTORING_FILE = 'RESTORING'
export const TMP_PREFIX = '.tmp-'
export const QUARANTINE_PREFIX = 'quarantine-'

const GEN_NAME = /^gen-(\d{12})$/

export function generationName(seq: number): string {
  return `gen-${String(seq).padStart(12, '0')}`
}

/** The sequence number of a generation directory's name, or undefined if it is not one. */
export function generationSeq(name: string): number | undefined {
  const m = GEN_NAME.exec(name)
  return m ? Number(m[1]) : undefined
}

/** File name stem of a segment: key and id, so IPC_PRIVATE segments (key 0) differ. */
export function segmentStem(key: number, id: number): string {
  return `${formatKey(key).slice(2)}-${id}`
}

/** Why a generation was taken. */
export type SnapshotReason = 'manual' | 'stop' | 'exit' | 'checkpoint' | 'library'

/** A segment's name, size and who may read it, as saved. */
export interface SegmentIdentity {
  key: string
  id: number
  size: number
  /** `mode & 0o777`. */
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
}

/** One segment as saved (the `.meta` file). */
export interface SegmentRecord extends SegmentIdentity {
  format: number
  /** Kernel page size of the attachment: > the base page size means a hugetlb segment. */
  pageSize: number
  hugetlb: boolean
  /** Information only: they cannot be restored. Read with IPC_STAT before attaching. */
  info: { cpid: number; lpid: number; nattch: number; atime: number; dtime: number; ctime: number }
  chunkSize: number
  chunkCount: number
  dataChunks: number
  zeroChunks: number
  /** The chunk table, base64 of CHUNK_ENTRY_BYTES per chunk. */
  chunks: string
  /** XXH3-128 of each chunk, base64 of 16 bytes per chunk (zeros for zero chunks): "unchanged" for incremental snapshots. */
  hashes?: string
  /** Name of the data file in the generation directory. */
  data: string
  /**
   * The data file as it was when its bytes were last known good (written by
   * this generation, or checked before it was linked), and where the sweep
   * of a trusted file goes on (src/state/stamp.ts). Absent in older records.
   */
  file?: FileStamp
}

/** A data file's identity when it was last known good (docs/FORMAT.md, "Trusting a data file"). */
export interface FileStamp {
  /** st_dev and st_ino, decimal. */
  dev: string
  ino: string
  size: number
  /** st_mtime in nanoseconds, decimal. */
  mtimeNs: string
  /** The chunk the next snapshot that links the file starts checking at. */
  sweep: number
}

/**
 * The data file that holds the small segments of a generation, packed (each
 * at a page-aligned offset; all-zero chunks are holes). Their records are in
 * GENERATION itself: one file and one record list for thousands of small
 * segments, instead of two files each.
 */
export const PACK_DATA = 'pack.data'

/** A packed segment's record: where in {@link PACK_DATA} its bytes start. */
export interface PackedRecord extends SegmentRecord {
  /** Byte offset of the segment's byte 0 in pack.data (a multiple of 4096). */
  offset: number
}

/** The segments list inside GENERATION: enough to name each segment without its .meta. */
export interface SegmentEntry {
  key: string
  id: number
  size: number
  /** The .meta file (empty for a packed segment). */
  meta: string
  data: string
  /** A small segment packed into pack.data: its whole record (format 2). */
  packed?: PackedRecord
}

/**
 * How the image was taken. `stopped`: no process but shmkeep's own pins was
 * attached to a saved segment, before and after its copy — the image is one
 * instant. `frozen`: the app was frozen (SIGSTOP or the cgroup freezer) while
 * it was copied. `live`: something was attached and may have written during
 * the copy: every chunk is bytes that were in memory (each verifies), but
 * chunks may come from different instants (a torn image). `unknown`: a
 * format 1 generation that was not marked inconsistent (format 1 did not
 * check attachers of a manual snapshot).
 */
export type Consistency = 'stopped' | 'frozen' | 'live' | 'unknown'

/** A segment the snapshot could not save, and what would let it. */
export interface UnsavedRecord extends SegmentIdentity {
  /** errno name (EACCES, EPERM, ENOMEM…). */
  errno: string
  /** The system call that failed, when one did. */
  syscall?: string
  reason: string
  /** What would make it readable, or leave it out on purpose. */
  remedy: string
}

/** The GENERATION file. */
export interface GenerationRecord {
  format: number
  tool: 'shmkeep'
  toolVersion: string
  name: string
  seq: number
  /** The generation the live state was restored from (or last snapshotted to); null for a first start. */
  parent: string | null
  createdAt: string
  hostname: string
  kernel: string
  reason: SnapshotReason
  /** Taken at a clean stop of the app. */
  clean: boolean
  /** Written beside CURRENT without switching it (another writer moved CURRENT, or the operator said so). */
  side: boolean
  sideReason?: string
  /** How the image was taken (format 2; a format 1 record is upgraded on reading). */
  consistency: Consistency
  /** Processes other than shmkeep attached while it was taken (pid 0: not visible from here). */
  attachers?: Array<{ key: string; pid: number; command: string }>
  /** Segments that could not be saved (a partial generation); absent or empty: every segment taken was saved. */
  unsaved?: UnsavedRecord[]
  bytes: number
  bytesWritten: number
  durationMs: { total: number; copy: number }
  segments: SegmentEntry[]
  /** Semaphore sets and message queues (src/kinds): records, unsaved ones, the packed data file. Absent before they were saved. */
  objects?: ObjectsSection
}

/**
 * A GENERATION as this version works with it, whatever version wrote it.
 * Format 1 marked a generation `inconsistent` (with attachers) where format 2
 * says `consistency: 'live'`; unmarked format 1 generations are `unknown`.
 */
export function upgradeGeneration(raw: GenerationRecord & { inconsistent?: { attachers: GenerationRecord['attachers'] } }): GenerationRecord {
  if (raw.format >= 2) return raw
  const { inconsistent, ...rest } = raw
  return { ...rest, consistency: inconsistent ? 'live' : 'unknown', ...(inconsistent?.attachers?.length ? { attachers: inconsistent.attachers } : {}) }
}

/** A packed segment's record from its GENERATION entry, checked like a .meta against the entry. */
export function checkPacked(file: string, entry: SegmentEntry): PackedRecord {
  const p = entry.packed!
  if (p.key !== entry.key || p.id !== entry.id || p.size !== entry.size) {
    throw new StateFileError(file, `packs segment ${p.key} (id ${p.id}, ${p.size} bytes) under the entry of ${entry.key} (id ${entry.id}, ${entry.size} bytes)`)
  }
  if (p.data !== PACK_DATA || entry.data !== PACK_DATA || !Number.isSafeInteger(p.offset) || p.offset < 0 || p.offset % 4096 !== 0) {
    throw new StateFileError(file, `segment ${p.key} (id ${p.id}): not a packed record shmkeep writes (data ${JSON.stringify(p.data)}, offset ${p.offset})`)
  }
  return p
}

/** A generation saved only part of the segments it was asked to. */
export function isPartial(g: GenerationRecord): boolean {
  return (g.unsaved?.length ?? 0) > 0 || (g.objects?.unsaved?.length ?? 0) > 0
}

/** A decoded chunk table entry. */
export interface ChunkEntry {
  crc: number
  type: typeof CHUNK_ZERO | typeof CHUNK_DATA
}

/** Number of chunks of a segment. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize)
}
