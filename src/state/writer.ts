/**
 * Writing one generation: begin (a private `.tmp-gen-N/`), add files, commit
 * (every file fsynced, GENERATION written and fsynced, the directory fsynced,
 * renamed into place, the state dir fsynced), switch CURRENT, or abandon.
 *
 * Files are created here (0600, O_EXCL|O_NOFOLLOW) and stay open until
 * commit fsyncs them through the same descriptor: a descriptor opened later
 * would not hear of a failed write-back. Those fsyncs run in parallel on the
 * thread pool (one file system, many small files: the disk takes them as one
 * batch) — never `syncfs`, which on a bind-mounted host file system flushes
 * every tenant's data. Whatever the order in which they finish, all of them
 * end before GENERATION is written: that is the durability order
 * docs/FORMAT.md states and test/crash.test.ts proves. A failed fsync is
 * never retried (the page cache may have dropped the data): the generation is
 * abandoned.
 */
import fs from 'node:fs'
import { encodeCheckedJson, fsyncDir, makePrivateDir, openNewFile } from './files'
import { FORMAT, GENERATION_FILE, generationName, TMP_PREFIX, type GenerationRecord } from './format'
import type { StateDir } from './statedir'

/** Open descriptors before the writer fsyncs (and closes) them early: far below any RLIMIT_NOFILE. */
const MAX_OPEN = 256
/** fsyncs in flight at once. */
const PARALLEL_FSYNC = 16

export type WriterState = 'writing' | 'renamed' | 'switching' | 'current' | 'abandoned'

export class GenerationWriter {
  /** Files created and written, not yet fsynced: name → descriptor. */
  private readonly open = new Map<string, number>()
  /**
   * Descriptors whose fsync is in flight, each closed when its fsync
   * returns — after the truncation an abort asked for, if any (never before:
   * the number could name another file by then).
   */
  private readonly syncing = new Map<number, { truncated?: Promise<void> }>()
  private _state: WriterState = 'writing'

  private constructor(
    readonly stateDir: StateDir,
    readonly name: string,
    readonly seq: number,
    readonly dir: string,
  ) {}

  /** A new generation: the next sequence number, its temporary directory made. */
  static begin(stateDir: StateDir): GenerationWriter {
    const seq = stateDir.nextSeq()
    const name = generationName(seq)
    const dir = stateDir.path(TMP_PREFIX + name)
    makePrivateDir(dir)
    return new GenerationWriter(stateDir, name, seq, dir)
  }

  get state(): WriterState {
    return this._state
  }

  path(file: string): string {
    return `${this.dir}/${file}`
  }

  /**
   * Create a file of the generation and return its descriptor (left open:
   * commit fsyncs through it). The caller writes it, e.g. a native copy.
   */
  create(file: string): number {
    const fd = openNewFile(this.path(file))
    this.open.set(file, fd)
    return fd
  }

  /** Create a file with these bytes (fsynced at commit). */
  addFile(file: string, data: string | Uint8Array): void {
    fs.writeFileSync(this.create(file), data)
  }

  /** Share a file of an earlier generation (a hard link: its inode was fsynced when written). */
  link(from: string, file: string): void {
    fs.linkSync(from, this.path(file))
  }

  /** Take a file back out (a segment redone or dropped): closed without fsync, unlinked. */
  remove(file: string): void {
    const fd = this.open.get(file)
    if (fd !== undefined) {
      this.open.delete(file)
      fs.closeSync(fd)
    }
    fs.rmSync(this.path(file), { force: true })
  }

  /** fsync early when many files are open (same order guarantees: still before GENERATION). */
  async relieve(): Promise<void> {
    if (this.open.size >= MAX_OPEN) await this.syncFiles()
  }

  /** fsync one descriptor on the thread pool, then close it (whatever became of the generation meanwhile). */
  private fsyncClose(fd: number): Promise<void> {
    const entry: { truncated?: Promise<void> } = {}
    this.syncing.set(fd, entry)
    return new Promise((resolve, reject) => {
      fs.fsync(fd, (err) => {
        this.syncing.delete(fd)
        void Promise.resolve(entry.truncated).then(() => fs.close(fd, () => (err ? reject(err) : resolve())))
      })
    })
  }

  /**
   * fsync and close every open file, several at once. The first error is
   * thrown, after all have returned — unless `signal` aborts first (a TERM
   * while a checkpoint's gigabytes are written back): then at once, without
   * waiting for the fsyncs in flight, which cannot be interrupted. Their
   * files are truncated to nothing (on the thread pool: a truncate waits for
   * the pages already under write-back, which would hold up the event loop
   * as long as the fsync), which drops the pages not yet sent to the disk;
   * each file is closed once both have returned. The files whose fsync had
   * not begun stay open for abandon().
   */
  async syncFiles(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    const files = [...this.open]
    this.open.clear()
    let first: unknown
    let next = 0
    const lane = async () => {
      while (next < files.length && !signal?.aborted) {
        const fd = files[next++]![1]
        try {
          await this.fsyncClose(fd)
        } catch (e) {
          first ??= e
        }
      }
    }
    const all = Promise.all(Array.from({ length: Math.min(PARALLEL_FSYNC, files.length) }, lane))
    if (signal) {
      let onAbort: (() => void) | undefined
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => {
          for (const [file, fd] of files.slice(next)) this.open.set(file, fd)
          for (const [fd, entry] of this.syncing) entry.truncated ??= new Promise((done) => fs.ftruncate(fd, 0, () => done()))
          reject(signal.reason)
        }
        signal.addEventListener('abort', onAbort, { once: true })
      })
      aborted.catch(() => {}) // when the fsyncs win, nobody awaits it
      try {
        await Promise.race([all, aborted])
      } finally {
        signal.removeEventListener('abort', onAbort!)
      }
      signal.throwIfAborted()
    } else {
      await all
    }
    if (first !== undefined) throw first
  }

  /**
   * Make the generation complete on disk and give it its name: every file
   * fsynced, GENERATION written and fsynced, the directory fsynced, renamed
   * to `gen-N`, the state dir fsynced. Until the rename, `signal` abandons it
   * (see syncFiles; the caller then calls abandon()).
   */
  async commit(record: GenerationRecord, signal?: AbortSignal): Promise<void> {
    if (this._state !== 'writing') throw new Error(`generation ${this.name} is ${this._state}, not being written`)
    await this.syncFiles(signal)
    this.addFile(GENERATION_FILE, encodeCheckedJson(FORMAT, record, { compact: true }))
    await this.syncFiles(signal)
    fsyncDir(this.dir)
    fs.renameSync(this.dir, this.stateDir.path(this.name))
    this._state = 'renamed'
    // What this process wrote needs no reading back (prune, the fallback).
    this.stateDir.remember(this.name, record as GenerationRecord)
    fsyncDir(this.stateDir.dir)
  }

  /** Point CURRENT at the committed generation (CURRENT.tmp, fsync, rename, fsync the state dir). */
  switchCurrent(): void {
    if (this._state !== 'renamed') throw new Error(`generation ${this.name} is ${this._state}: only a committed generation becomes CURRENT`)
    this._state = 'switching'
    this.stateDir.writeCurrent(this.name)
    this._state = 'current'
  }

  /** Give up: close what is open and remove the temporary directory (a committed generation stays). */
  abandon(): void {
    for (const fd of this.open.values()) {
      try {
        fs.closeSync(fd)
      } catch {
        // abandoned anyway
      }
    }
    this.open.clear()
    if (this._state === 'writing') {
      this._state = 'abandoned'
      fs.rmSync(this.dir, { recursive: true, force: true })
    }
  }
}
