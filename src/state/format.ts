/**
 * The on-disk format of a generation (docs/FORMAT.md says the same in prose).
 *
 * ```
 * STATE/
 *   CURRENT                        name of the generation to restore ("gen-000000000042\n")
 *   LOCK                           flock: one writer at a time
 *   LIVE                           which generation each IPC namespace's live state descends from
 *   RESTORING                      a restore in progress (so a killed one is cleaned up)
 *   gen-000000000042/
 *     GENERATION                   checked JSON: the generation and its list of segments
 *     0000162e-3.meta              checked JSON: one segment's metadata and chunk table
 *     0000162e-3.data              the segment's bytes, raw; all-zero chunks are holes
 *   .tmp-gen-000000000043/         a snapshot being written (removed if found stale)
 *   quarantine-gen-000000000041/   a generation that failed verification, kept aside
 * ```
 */
import { formatKey } from '../keys'

/** Version of everything above. A reader refuses a version it does not know. */
export const FORMAT = 1

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

/** One segment as saved (the `.meta` file). */
export interface SegmentRecord {
  format: typeof FORMAT
  key: string
  id: number
  size: number
  /** `mode & 0o777`. */
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
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
}

/** The segments list inside GENERATION: enough to name each segment without its .meta. */
export interface SegmentEntry {
  key: string
  id: number
  size: number
  meta: string
  data: string
}

/** The GENERATION file. */
export interface GenerationRecord {
  format: typeof FORMAT
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
  /** Processes other than shmkeep were attached while it was taken. */
  inconsistent?: { attachers: Array<{ key: string; pid: number; command: string }> }
  bytes: number
  bytesWritten: number
  durationMs: { total: number; copy: number }
  segments: SegmentEntry[]
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
