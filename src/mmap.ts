/**
 * File mapping for Node (what mmap-io offered, on current Node): map a file
 * MAP_SHARED as a Buffer, msync it, madvise it, unmap it.
 *
 * Can crash the process, as in C: touching a mapping of a file that another
 * process truncated (SIGBUS), and writing through a read-only mapping (SIGSEGV).
 * An unmapped Buffer is neutered (length 0); Node consumers still holding its
 * memory read zeros and write into private memory (docs/LIBRARY.md).
 */
import { constants as bufferConstants } from 'node:buffer'
import { markAsUntransferable } from 'node:worker_threads'
import { DetachedError, sys } from './errors'
import { native } from './native'
import { checkBool, checkCount, checkMode, checkOptions } from './options'

export interface MapOptions {
  /** Bytes to map (default: from offset to the end of the file). */
  length?: number
  /** Byte offset in the file (any value; the page alignment mmap needs is handled). */
  offset?: number
  /** Map read-write (default read-only). */
  write?: boolean
  /** Create the file if missing and extend it to offset + length (with fallocate: ENOSPC now, not SIGBUS later). */
  create?: boolean
  /** Permission bits of a created file (default 0o600). */
  mode?: number
}

/** How the kernel should expect the mapping to be used (madvise). */
export type Advice =
  | 'normal' | 'random' | 'sequential' | 'willneed' | 'dontneed'
  | 'hugepage' | 'nohugepage' | 'dontfork' | 'dofork' | 'dontdump' | 'dodump'
  | 'populate_read' | 'populate_write'

/**
 * A Buffer over a file's pages, as {@link map} returns it. It is Disposable:
 * `using m = mmap.map(path)` unmaps it at the end of the block.
 */
export type MappedBuffer = Buffer & Disposable

interface Mapping {
  handle: object
  path: string
  /** unmap() ran: the Buffer is neutered, the mapping gone. */
  unmapped: boolean
}

const mappings = new WeakMap<Buffer, Mapping>()

function mappingOf(what: string, buffer: Buffer, { live = true } = {}): Mapping {
  const m = mappings.get(buffer)
  if (!m) throw new TypeError(`${what}: not a Buffer returned by mmap.map`)
  if (live && m.unmapped) throw new DetachedError(what, m.path, 'unmapped')
  return m
}

/**
 * Map a file (MAP_SHARED) as a Buffer; {@link unmap} (or `using`) releases
 * it. A Buffer that becomes unreachable is unmapped too, but only after a
 * garbage collection and a turn of the event loop: in a loop, unmap.
 */
export function map(path: string, options: MapOptions = {}): MappedBuffer {
  checkOptions('mmap.map', options, ['length', 'offset', 'write', 'create', 'mode'])
  if (typeof path !== 'string' || path === '') throw new TypeError('mmap.map: path must be a non-empty string')
  if (path.includes('\0')) throw new TypeError('mmap.map: path must not contain a NUL byte')
  const offset = checkCount('offset', options.offset ?? 0)
  const length = options.length === undefined ? -1 : checkCount('length', options.length, { min: 1 })
  if (length > bufferConstants.MAX_LENGTH) {
    throw new RangeError(`length ${length} is above the largest Buffer Node can make (${bufferConstants.MAX_LENGTH})`)
  }
  const write = checkBool('write', options.write, false)
  const create = checkBool('create', options.create, false)
  if (create && !write) throw new TypeError('mmap.map: create needs write: true')
  if (create && length < 0) throw new TypeError('mmap.map: create needs a length')
  const mode = checkMode('mode', options.mode ?? 0o600)
  const raw = sys(path, () => native.mmapMap(path, offset, length, write, create, mode, bufferConstants.MAX_LENGTH))
  const buffer = raw.buffer as MappedBuffer
  mappings.set(buffer, { handle: raw.handle, path, unmapped: false })
  markAsUntransferable(buffer.buffer)
  Object.defineProperty(buffer, Symbol.dispose, { value: () => unmap(buffer), configurable: true })
  return buffer
}

/** msync: write the mapping's dirty pages to the file (`async: true` only schedules it). */
export function sync(buffer: Buffer, options: { async?: boolean } = {}): void {
  checkOptions('mmap.sync', options, ['async'])
  const m = mappingOf('mmap.sync', buffer)
  const async = checkBool('async', options.async, false)
  sys(m.path, () => native.mmapSync(m.handle, async))
}

/** madvise over the whole mapping. */
export function advise(buffer: Buffer, advice: Advice): void {
  const m = mappingOf('mmap.advise', buffer)
  const n = Object.hasOwn(native.madvice, advice) ? native.madvice[advice] : undefined
  if (n === undefined) throw new TypeError(`mmap.advise: unknown advice "${String(advice)}" (known: ${Object.keys(native.madvice).join(', ')})`)
  sys(m.path, () => native.mmapAdvise(m.handle, n))
}

/**
 * Release a mapping made by {@link map}: the file sees no more writes through
 * it and the Buffer has length 0. Node consumers still holding its memory (a
 * zlib, fs, socket or crypto call in flight) then read zeros and write into
 * private memory, never the file and never a later mapping at that address;
 * await them before unmapping. Unmapping twice is harmless.
 */
export function unmap(buffer: Buffer): void {
  const m = mappingOf('mmap.unmap', buffer, { live: false })
  if (m.unmapped) return
  sys(m.path, () => native.mmapUnmap(m.handle, buffer))
  m.unmapped = true
}
