/**
 * The state directory: its generations, CURRENT, the writer lock, and the two
 * small records that tie it to live IPC namespaces (LIVE, RESTORING).
 * Everything here is about names and files; what to save or restore is
 * decided in src/snapshot.ts and src/restore.ts.
 */
import fs from 'node:fs'
import path from 'node:path'
import { lockFile, type FileLock } from '../lock'
import { fsyncDir, readCheckedJson, readRegularFile, replaceFile, encodeCheckedJson, StateFileError } from './files'
import {
  CURRENT_FILE,
  FORMAT,
  GENERATION_FILE,
  generationSeq,
  LIVE_FILE,
  LOCK_FILE,
  PACK_DATA,
  QUARANTINE_PREFIX,
  READABLE_FORMATS,
  RESTORING_FILE,
  TMP_PREFIX,
  type GenerationRecord,
  type SegmentEntry,
  type SegmentRecord,
  checkPacked,
  upgradeGeneration,
} from './format'

/** A restore in progress in one IPC namespace (the RESTORING file). */
export interface RestoringRecord {
  ns: string
  pid: number
  generation: string
  startedAt: string
  /** Keys it is restoring. */
  keys: string[]
  /** Segments created so far (ids); with pid, enough to remove them after a kill. */
  created: Array<{ key: string; id: number }>
}

/** Which generation each IPC namespace's live state descends from (the LIVE file). */
interface LiveRecord {
  entries: Array<{ ns: string; generation: string; at: string; segments?: Array<{ id: number; key: number; ctime: number }> }>
}

/** How many namespaces LIVE remembers. */
const LIVE_ENTRIES = 32

export interface GenerationDir {
  name: string
  seq: number
  path: string
}

export class StateDir {
  private constructor(readonly dir: string) {}

  /** Open (and with `create`, make 0700) a state dir. */
  static open(dir: string, { create = false } = {}): StateDir {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('a state dir is required (--state-dir or SHMKEEP_STATE_DIR)')
    const abs = path.resolve(dir)
    let st: fs.Stats
    try {
      st = fs.statSync(abs)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw e
      fs.mkdirSync(abs, { recursive: true, mode: 0o700 })
      st = fs.statSync(abs)
    }
    if (!st.isDirectory()) throw new StateFileError(abs, 'is not a directory', 'ENOTDIR')
    return new StateDir(abs)
  }

  path(...names: string[]): string {
    return path.join(this.dir, ...names)
  }

  /** The writer lock (flock on LOCK). */
  lock(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<FileLock> {
    return lockFile(this.path(LOCK_FILE), { exclusive: true, ...options })
  }

  /**
   * Remove what a killed writer left: `.tmp-*` directories and `*.tmp` files
   * of ours. Only under the lock. Returns the names removed.
   */
  removeStaleTemporaries(): string[] {
    const removed: string[] = []
    for (const name of fs.readdirSync(this.dir)) {
      const ours =
        name.startsWith(TMP_PREFIX + 'gen-') ||
        [CURRENT_FILE, LIVE_FILE, RESTORING_FILE].some((f) => name === f + '.tmp')
      if (!ours) continue
      fs.rmSync(this.path(name), { recursive: true, force: true })
      removed.push(name)
    }
    if (removed.length) fsyncDir(this.dir)
    return removed
  }

  /** Complete generation directories, oldest first. Anything else in the dir is ignored. */
  generations(): GenerationDir[] {
    const out: GenerationDir[] = []
    for (const entry of fs.readdirSync(this.dir, { withFileTypes: true })) {
      const seq = generationSeq(entry.name)
      if (seq === undefined || !entry.isDirectory()) continue
      out.push({ name: entry.name, seq, path: this.path(entry.name) })
    }
    return out.sort((a, b) => a.seq - b.seq)
  }

  /** The next sequence number: above every generation, temporary or quarantined one ever seen here. */
  nextSeq(): number {
    let max = 0
    for (const name of fs.readdirSync(this.dir)) {
      const m = /gen-(\d{12})/.exec(name)
      if (m) max = Math.max(max, Number(m[1]))
    }
    return max + 1
  }

  /** What CURRENT names: a generation name, null when there is no CURRENT, or an error when it is unreadable. */
  readCurrent(): { name: string | null } | { error: string } {
    let text: string
    try {
      text = readRegularFile(this.path(CURRENT_FILE), 4096).toString('utf8')
    } catch (e) {
      if (e instanceof StateFileError && e.code === 'ENOENT') return { name: null }
      return { error: e instanceof Error ? e.message : String(e) }
    }
    const name = text.trim()
    if (generationSeq(name) === undefined || text !== name + '\n') {
      return { error: `${this.path(CURRENT_FILE)}: does not name a generation (${JSON.stringify(text.slice(0, 40))})` }
    }
    return { name }
  }

  /** Point CURRENT at a generation: CURRENT.tmp, fsync, rename, fsync the dir. */
  writeCurrent(name: string): void {
    replaceFile(this.path(CURRENT_FILE), name + '\n')
  }

  readGeneration(name: string): GenerationRecord {
    const record = upgradeGeneration(readCheckedJson<GenerationRecord>(this.path(name, GENERATION_FILE), READABLE_FORMATS))
    if (record.name !== name) throw new StateFileError(this.path(name, GENERATION_FILE), `says it is ${record.name}, but lives in ${name}`)
    return record
  }

  readSegment(generation: string, entry: SegmentEntry): SegmentRecord {
    if (entry.packed) return checkPacked(this.path(generation, GENERATION_FILE), entry)
    const file = this.path(generation, safeName(entry.meta))
    const record = readCheckedJson<SegmentRecord>(file, READABLE_FORMATS)
    if (record.key !== entry.key || record.id !== entry.id || record.size !== entry.size) {
      throw new StateFileError(
        file,
        `describes segment ${record.key} (id ${record.id}, ${record.size} bytes) but ${GENERATION_FILE} lists ${entry.key} (id ${entry.id}, ${entry.size} bytes)`,
      )
    }
    // The data file must be the one GENERATION names, inside this generation.
    if (record.data !== safeName(entry.data)) throw new StateFileError(file, `names the data file ${JSON.stringify(record.data)} but ${GENERATION_FILE} lists ${entry.data}`)
    return record
  }

  /** Move a generation that failed verification aside (never delete it). Returns the new name (undefined: it was not there). */
  quarantine(name: string): string | undefined {
    if (!fs.existsSync(this.path(name))) return undefined // CURRENT named a generation that is not here
    let target = QUARANTINE_PREFIX + name
    for (let n = 2; fs.existsSync(this.path(target)); n++) target = `${QUARANTINE_PREFIX}${name}.${n}`
    fs.renameSync(this.path(name), this.path(target))
    fsyncDir(this.dir)
    return target
  }

  /**
   * The generation the live state of namespace `ns` descends from, if
   * recorded. Namespace ids (boot id + inode) can be reused once a namespace
   * is gone, so the record must also match a segment that is live now (same
   * id, key and change time): a new container that inherited the inode of an
   * old one does not inherit its lineage.
   */
  liveParent(ns: string, live: ReadonlyArray<{ id: number; key: number; ctime: number }>): string | null {
    const entry = this.readLive().entries.find((e) => e.ns === ns)
    if (!entry) return null
    const recorded = entry.segments ?? []
    if (recorded.length === 0) return entry.generation
    const here = new Set(live.map((s) => `${s.id}/${s.key >>> 0}/${s.ctime}`))
    return recorded.some((r) => here.has(`${r.id}/${r.key}/${r.ctime}`)) ? entry.generation : null
  }

  /** Record that namespace `ns` now holds `generation`'s state, in these segments. */
  setLive(ns: string, generation: string, segments: ReadonlyArray<{ id: number; key: number; ctime: number }>): void {
    const live = this.readLive()
    const entry = { ns, generation, at: new Date().toISOString(), segments: segments.map((s) => ({ id: s.id, key: s.key >>> 0, ctime: s.ctime })) }
    const entries = [entry, ...live.entries.filter((e) => e.ns !== ns)].slice(0, LIVE_ENTRIES)
    // Lineage of live namespaces: no fsync, a host crash ends them anyway.
    replaceFile(this.path(LIVE_FILE), encodeCheckedJson(FORMAT, { entries }), { durable: false })
  }

  private readLive(): LiveRecord {
    try {
      return readCheckedJson<LiveRecord>(this.path(LIVE_FILE), READABLE_FORMATS)
    } catch (e) {
      // A missing or damaged LIVE only loses lineage: the next switch of
      // CURRENT then needs --force, which is the safe side.
      return { entries: [] }
    }
  }

  /**
   * The restore in progress, if any. An unreadable record (it is written
   * without fsync, so a host crash can leave it empty) belongs to a namespace
   * that died with the host: it is removed and reported as `damaged`.
   */
  readRestoring(): RestoringRecord | null | { damaged: string } {
    try {
      return readCheckedJson<RestoringRecord>(this.path(RESTORING_FILE), READABLE_FORMATS)
    } catch (e) {
      if (e instanceof StateFileError && e.code === 'ENOENT') return null
      fs.rmSync(this.path(RESTORING_FILE), { force: true, recursive: true })
      return { damaged: e instanceof Error ? e.message : String(e) }
    }
  }

  writeRestoring(record: RestoringRecord): void {
    // Only about this IPC namespace: no fsync (see replaceFile).
    replaceFile(this.path(RESTORING_FILE), encodeCheckedJson(FORMAT, record), { durable: false })
  }

  clearRestoring(): void {
    fs.rmSync(this.path(RESTORING_FILE), { force: true })
  }
}

/** A file name from a metadata file must stay inside its generation directory. */
export function safeName(name: string): string {
  if (typeof name !== 'string' || !(/^[0-9a-f]{8}-\d+\.(meta|data)$/.test(name) || name === PACK_DATA)) {
    throw new StateFileError(name, 'is not a segment file name shmkeep writes')
  }
  return name
}
