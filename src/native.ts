/**
 * Typed loader of the addon. node-gyp-build picks a prebuild from
 * `prebuilds/<platform>-<arch>/` when one matches, else `build/Release/`.
 * Every function here is a thin system call; argument checking and every
 * decision live in the modules that call them.
 */
import path from 'node:path'

/** IPC_STAT of one segment, as the kernel reports it. */
export interface RawShmStat {
  id: number
  key: number
  size: number
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
  cpid: number
  lpid: number
  nattch: number
  atime: number
  dtime: number
  ctime: number
}

/** IPC_STAT of one semaphore set. */
export interface RawSemStat {
  id: number
  key: number
  nsems: number
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
  otime: number
  ctime: number
}

/** IPC_STAT of one message queue. */
export interface RawMsgStat {
  id: number
  key: number
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
  cbytes: number
  qnum: number
  qbytes: number
  lspid: number
  lrpid: number
  stime: number
  rtime: number
  ctime: number
}

export interface RawMapping {
  buffer: Buffer
  handle: object
}

export interface RawLimits {
  shmmax: number
  shmmin: number
  shmmni: number
  shmseg: number
  shmall: number
  usedIds: number
  totalPages: number
  residentPages: number
  swappedPages: number
}

/** One 8-byte entry per chunk: u32le CRC-32C, u8 type (0 zero, 1 data), 3 zero bytes. */
export type ChunkTable = Buffer

/**
 * From cancelToken(): given as `cancel` to the workers of one operation. cancelCopy
 * sets it (they reject with ECANCELED); saveSegment, savePacked, restoreSegment and
 * verifyFile count the bytes they finish in it, chunk by chunk (jobBytes reads them).
 */
export type CancelToken = object & { readonly __cancelToken: unique symbol }

export interface RawSaveResult {
  chunks: ChunkTable
  stat: RawShmStat
  /** IPC_STAT again after the copy, while still attached (SHM_DEST in mode: removed meanwhile); null when it failed. */
  statAfter: RawShmStat | null
  kernelPageSize: number
  bytesWritten: number
  dataChunks: number
  zeroChunks: number
  /** Chunks marked zero only because mincore found none of their pages (never read). */
  absentChunks: number
  /** XXH3-128 per chunk, 16 bytes each (zeros for zero chunks). */
  hashes: Buffer
  /** Every chunk is as in `previous`: nothing was written (the tables are the previous ones). */
  unchanged: boolean
  /** With carryUnchanged: one byte per chunk, 1 = as in `previous`, not written (copyCarried fills it). */
  carried: Buffer
  carriedChunks: number
  /** holes 'mincoreSwapCheck' found swapped pages: from then on every page was read. */
  holesLost: boolean
  /** O_DIRECT wrote (some of) the file. */
  direct: boolean
}

export interface RawCheckResult {
  badChunks: number[]
  bytesRead: number
}

export interface Binding {
  shmGet(key: number, size: number, flags: number, uid: number, gid: number): number
  shmAttach(id: number, readonly: boolean, offset: number, length: number, uid: number, gid: number, maxLength: number): RawMapping & { size: number }
  shmDetach(handle: object, buffer: Buffer): boolean
  shmStat(id: number): RawShmStat
  shmList(): { segments: RawShmStat[]; statAny: boolean; usedIds: number }
  shmSet(id: number, uid: number, gid: number, mode: number, asUid: number, asGid: number): void
  shmRemove(id: number, asUid: number, asGid: number): void
  shmLimits(): RawLimits
  shmConstants: Record<'IPC_PRIVATE' | 'IPC_CREAT' | 'IPC_EXCL' | 'SHM_HUGETLB' | 'SHM_NORESERVE' | 'SHM_HUGE_SHIFT' | 'SHM_DEST' | 'SHM_LOCKED' | 'PAGE_SIZE', number>

  semGet(key: number, nsems: number, flags: number, uid: number, gid: number): number
  semStat(id: number, uid: number, gid: number): RawSemStat
  semList(): { sets: RawSemStat[]; statAny: boolean; usedIds: number }
  semGetAll(id: number, nsems: number, uid: number, gid: number): number[]
  semWaiters(id: number, nsems: number, uid: number, gid: number): { pid: number[]; ncnt: number[]; zcnt: number[] }
  semSetAll(id: number, values: number[], uid: number, gid: number): void
  /** ops: [num, op, flags] triples, flattened; false = it would block (EAGAIN). */
  semOp(id: number, ops: number[], uid: number, gid: number): boolean
  semSet(id: number, uid: number, gid: number, mode: number, asUid: number, asGid: number): void
  semRemove(id: number, asUid: number, asGid: number): void
  semLimits(): { semmsl: number; semmns: number; semopm: number; semmni: number; semvmx: number; semaem: number; usedIds: number; usedSems: number; maxIndex: number }
  semConstants: Record<'SEM_UNDO', number>

  msgGet(key: number, flags: number, uid: number, gid: number): number
  msgStat(id: number, uid: number, gid: number): RawMsgStat
  msgList(): { queues: RawMsgStat[]; statAny: boolean; usedIds: number }
  /** false = the queue is full (EAGAIN). */
  msgSend(id: number, type: number, data: Uint8Array, flags: number, uid: number, gid: number): boolean
  /** Messages i = sizes[i] bytes of data at offsets[i], type types[i], sent in order under one identity switch; how many were sent before a full queue. */
  msgSendAll(id: number, data: Uint8Array, types: number[], offsets: number[], sizes: number[], uid: number, gid: number): number
  /** null = no message (ENOMSG). */
  msgReceive(id: number, type: number, maxSize: number, flags: number, uid: number, gid: number): { type: number; data: Buffer } | null
  msgCopyAll(id: number, bufSize: number, firstSize: number, uid: number, gid: number): { before: RawMsgStat; after: RawMsgStat; types: number[]; sizes: number[]; data: Buffer }
  msgSet(id: number, uid: number, gid: number, mode: number, qbytes: number, asUid: number, asGid: number): void
  msgRemove(id: number, asUid: number, asGid: number): void
  msgLimits(): { msgmax: number; msgmnb: number; msgmni: number; usedIds: number; messages: number; bytes: number; maxIndex: number }
  msgConstants: Record<'MSG_COPY' | 'MSG_EXCEPT' | 'MSG_NOERROR', number>

  /** The data runs of a file's first `size` bytes (SEEK_DATA/SEEK_HOLE), flattened [offset, length, ...]. */
  posixDataRuns(fd: number, size: number): number[]

  /** mq_open (O_NONBLOCK always); with maxmsg > 0, created with these attributes, as uid/gid. */
  mqOpen(name: string, oflag: number, mode: number, maxmsg: number, msgsize: number, uid: number, gid: number): number
  mqAttr(fd: number): { maxmsg: number; msgsize: number; curmsgs: number }
  /** Receive every message, then send each back at once (POSIX queues have no non-destructive read). */
  mqTakeAll(fd: number, msgsize: number): { prios: number[]; sizes: number[]; data: Buffer; resent: number; error?: Error }
  /** false = the queue is full (EAGAIN). */
  mqSend(fd: number, data: Uint8Array, prio: number): boolean
  mqUnlink(name: string, uid: number, gid: number): void

  mmapMap(path: string, offset: number, length: number, write: boolean, create: boolean, mode: number, maxLength: number): RawMapping & { fileSize: number }
  mmapSync(handle: object, async: boolean): void
  mmapAdvise(handle: object, advice: number): void
  mmapUnmap(handle: object, buffer: Buffer): boolean
  madvice: Record<string, number>

  flockTry(fd: number, exclusive: boolean): boolean
  flockRelease(fd: number): void

  crc32c(data: Uint8Array, seed?: number): number
  crc32cImpl(): string
  /** Small segments into one pack file, in one job; each result is the segment's own (or its error). */
  savePacked(o: {
    segments: Array<{ id: number; uid: number; gid: number; size: number }>
    fd: number
    offset: number
    chunkSize: number
    holes: 'read' | 'mincore' | 'mincoreSwapCheck' | 'mapFiles'
    cancel?: CancelToken
  }): Promise<Array<{ key: number; size: number; chunks: Buffer; dataChunks: number; zeroChunks: number; bytesWritten: number; offset: number } | { errno: number; syscall: string; message: string }>>
  saveSegment(o: {
    id: number
    uid: number
    gid: number
    path: string | null
    chunkSize: number
    /** How holes are found (src/residency.ts); skipAbsent is the older spelling of 'mincore' / 'read'. */
    holes?: 'mapFiles' | 'mincore' | 'mincoreSwapCheck' | 'read'
    skipAbsent?: boolean
    fsync: boolean
    /** Write through O_DIRECT where the file system takes it (else buffered, with write-behind when fsync). */
    direct?: boolean
    cancel?: CancelToken
    fd?: number
    previous?: { chunks: ChunkTable; hashes: Buffer }
    carryUnchanged?: boolean
    /** Threads sharing the chunks (src/lanes.ts); 1 when not given. */
    lanes?: number
  }): Promise<RawSaveResult>
  checksumMapping(handle: object, buffer: Buffer): Promise<number>
  copyCarried(o: { from: string; fd: number; size: number; chunkSize: number; chunks: ChunkTable; carried: Buffer; cancel?: CancelToken }): Promise<{ bytesCopied: number }>
  restoreSegment(o: { id: number; uid: number; gid: number; path: string; size: number; chunkSize: number; chunks: ChunkTable; stopAtFirstBad: boolean; lanes?: number; mapFiles?: boolean; cancel?: CancelToken }): Promise<RawCheckResult & { mapFiles: boolean }>
  /** Chunks [first, first + count) only, when given (a snapshot's sweep of a trusted file). */
  verifyFile(o: { path: string; size: number; chunkSize: number; chunks: ChunkTable; first?: number; count?: number; lanes?: number; cancel?: CancelToken }): Promise<RawCheckResult>
  cancelToken(): CancelToken
  cancelCopy(token: CancelToken): void
  /** Bytes the token's workers have finished so far (a relaxed atomic load: cheap enough for a timer). */
  jobBytes(token: CancelToken): number
  /** Whether /proc/self/map_files opens here (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). */
  mapFilesOpens(): boolean

  /** `started(pid)` runs after the fork, before the child may exec (its log line comes before anything the app prints). */
  spawnApp(file: string, argv: string[], env: string[], foregroundTtyFd: number, cgroupProcs: string | null, started?: (pid: number) => void): number
  waitPid(pid: number): { code: number } | { signal: number } | null
  setChildSubreaper(): void
  foregroundGroup(fd: number): number
  setForeground(fd: number, pgid: number): void
}

// dist/native.js and src/native.ts both sit one level below the package root.
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: Binding = require('node-gyp-build')(path.resolve(__dirname, '..'))
