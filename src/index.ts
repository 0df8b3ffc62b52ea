// The declarations use Buffer, NodeJS.Signals and Disposable: TypeScript 6+
// no longer loads @types/* by itself, so say so in the shipped index.d.ts.
/// <reference types="node" preserve="true" />
/**
 * shmkeep — keep System V shared memory across container restarts.
 *
 * `shm`, `sem`, `msg` and `mmap` are the system-call layer; the snapshot and restore
 * functions build on them.
 */
export * as shm from './shm'
export * as mmap from './mmap'
export * as sem from './sem'
export * as msg from './msg'
export { IPC_PRIVATE, parseKey, formatKey, KeyRanges, type KeyLike } from './keys'
export { lockFile, type FileLock, type LockOptions } from './lock'
export { errnoName, hasCode, SystemError, DetachedError, OptionTypeError, OptionRangeError } from './errors'
export { StateFileError, StateDirMissingError } from './state/files'
export type { ShmStat, GetOptions, AttachOptions, AttachedBuffer, Limits, Scan } from './shm'
export type { MapOptions, MappedBuffer, Advice } from './mmap'
export type { SemStat, Operation as SemOperation, Waiters as SemWaiters } from './sem'
export type { MsgStat, Message, QueueCopy } from './msg'
export { snapshot, SnapshotError, DEFAULT_CHUNK_SIZE, type SnapshotOptions, type SnapshotReport, type SegmentOutcome, type UnsavedEntry } from './snapshot'
export { restore, RestoreError, type RestoreOptions, type RestoreReport, type SegmentRestore, type ConflictPolicy, type WarmPolicy } from './restore'
export { adopt, type AdoptOptions, type AdoptReport } from './adopt'
export { list, listGenerations, inspect, verify, prune, diff, type GenerationSummary, type GenerationDetail, type VerifyReport, type DiffReport, type SegmentDiff, type ObjectDiff, type DiffStatus } from './inspect'
export type { SegmentFilter } from './filter'
export { streamLogger, silentLogger, type Logger, type ProgressHandle } from './log'
export { createShutdown, SHUTDOWN_EXIT, type Shutdown, type ShutdownOptions, type ShutdownStep, type StepOptions, type StepReport, type StepStatus, type ShutdownReport, type ShutdownSnapshot, type ShutdownDeadline } from './shutdown'
