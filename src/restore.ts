/**
 * Restore: rebuild the segments of a generation in this IPC namespace —
 * same key, size, mode, owner and creator, and the same id where the kernel
 * lets us choose it.
 *
 * Never a half-filled segment: each one is created 0600 and only gets its
 * final mode and owner once every chunk was read into it and verified. A
 * restore in progress is recorded (RESTORING) so that a restore killed
 * halfway is undone by the next one in the same namespace. All or nothing
 * by default: if a segment of CURRENT fails verification, everything created
 * is removed and the newest earlier generation that verifies is restored
 * instead, as a whole.
 */
import os from 'node:os'
import { systemError } from './errors'
import { segmentPredicate, type SegmentFilter } from './filter'
import { creatorIdentity, currentPowers, type Identity, type Powers } from './identity'
import { formatKey, parseKey } from './keys'
import { ObjectDamage, ObjectRestorePlan, readObjects, undoKilledObjects, type ObjectRestore, type Payload, type SemFromCheckpoint } from './kinds'
import { silentLogger, startProgress, type Logger } from './log'
import { native } from './native'
import { checkEntryOptions } from './options'
import * as shm from './shm'
import { StateFileError } from './state/files'
import { cancelTokenFor } from './cancel'
import { PackFiles, restoreSaved, verifySaved } from './state/segdata'
import { generationSeq, type GenerationRecord, type SegmentRecord } from './state/format'
import { readLineage, warmth, writeLineage, type Undo } from './state/lineage'
import { StateDir, safeName } from './state/statedir'
import { disarmNextId, ipcNamespaceId, memoryLimit, nextIdControl, setNextId } from './system'

export type ConflictPolicy = 'fail' | 'skip' | 'replace'

/** What to do in a warm namespace (src/state/lineage.ts): keep its live state, or restore anyway. */
export type WarmPolicy = 'keep' | 'ignore'

export interface RestoreOptions {
  stateDir: string
  /**
   * A namespace that is warm — shmkeep's lineage record is here, or an object
   * saved in CURRENT is live, and no restore in it is unfinished (a container
   * restarted inside its Kubernetes pod, a second call in the same process):
   * keep its live state and restore nothing (default), or ignore that and
   * restore, with `onConflict` deciding about each key that exists (e.g.
   * `onConflict: 'replace'` to roll a warm namespace back).
   */
  warm?: WarmPolicy
  /**
   * A key that already has an object here, when a restore happens (a cold
   * namespace with stray keys, or `warm: 'ignore'`): fail (default), skip it,
   * or replace it when nobody is attached.
   */
  onConflict?: ConflictPolicy
  /** Restore the good segments of one generation and report the bad ones, instead of all or nothing. */
  partial?: boolean
  /** Restore this generation (no fallback to others). Default: CURRENT. */
  generation?: string
  /** Which objects (kinds, keys, owners; sizes pick segments): the others are skipped. Default: all. */
  filter?: SegmentFilter
  /** Semaphore sets saved by a checkpoint: restored, or skipped (default; see src/kinds). */
  semFromCheckpoint?: SemFromCheckpoint
  lockTimeoutMs?: number
  /**
   * Abandon the restore when this aborts (a TERM while restoring): every
   * segment created is removed. Abort with the signal's name as the reason
   * (`controller.abort('SIGTERM')`) and the error says so.
   */
  signal?: AbortSignal
  /** Trust a state dir other users may write (default: SHMKEEP_INSECURE_STATE_DIR; src/state/trust.ts). */
  insecureStateDir?: boolean
  log?: Logger
}

export type RestoreStatus = 'restored' | 'skipped' | 'failed' | 'not-restored'

export interface SegmentRestore {
  key: string
  /** The id it had when saved. */
  savedId: number
  /** The id it has now (undefined when not created). */
  id?: number
  size: number
  status: RestoreStatus
  reason?: string
  /** Whether the saved id came back. */
  idKept?: boolean
  bytesRead: number
  durationMs: number
}

export interface RestoreReport {
  stateDir: string
  /** The generation restored, or null when there was nothing to restore. */
  generation: string | null
  /** Generations tried before it that failed, with why (moved aside as quarantinedAs once an older one was restored). */
  rejected: Array<{ generation: string; reason: string; quarantinedAs?: string }>
  segments: SegmentRestore[]
  /** Semaphore sets and message queues. */
  objects: ObjectRestore[]
  /** Why ids could not be kept, when they could not. */
  idsNotKept?: string
  /** Segments removed that a killed restore had left. */
  cleanedUp: Array<{ key: string; id: number }>
  /**
   * The namespace was warm and kept as it was: nothing restored (generation
   * null). With `warm: 'ignore'` always false.
   */
  warm: boolean
  /** Why it is warm (its lineage record, or which saved objects are live). */
  warmReason?: string
  /** When warm: the objects saved in CURRENT that are live here ("segment 0x00005100", "semaphore set …"). */
  live?: string[]
  /**
   * The generation this namespace's live state now descends from (null: a
   * first start), or undefined when that is unknown (warm, without a lineage
   * record). Also recorded in the namespace itself unless `lineageNotRecorded`.
   */
  parent?: string | null
  /** Why the lineage record could not be written (the next snapshot then goes beside CURRENT). */
  lineageNotRecorded?: string
  /**
   * Why the state dir could not be written (a read-only mount): the restore
   * read it and wrote nothing there — no RESTORING, LOCK, LINEAGE, CURRENT.
   */
  stateDirReadOnly?: string
  bytes: number
  durationMs: number
}

/** A restore that left the namespace as it was (every segment it created was removed). */
export class RestoreError extends Error {
  constructor(
    message: string,
    readonly report: RestoreReport,
  ) {
    super(message)
  }
}

/** The generation's data is damaged or unreadable: another generation may do. */
class DamagedError extends Error {}

interface Created {
  key: string
  id: number
  as: Identity
}

/** Remove what a restore killed in this namespace created (its segments nobody attached yet). */
function undoKilledRestore(state: StateDir, ns: string, log: Logger): Array<{ key: string; id: number }> {
  // A RESTORING written before the dir became read-only stays there: the
  // lineage check below then knows the restore that follows as finished.
  const clear = () => clearRestoringQuietly(state, log)
  const record = state.readRestoring()
  if (!record) return []
  if ('damaged' in record) {
    log.log('warn', 'restore.record', `removed an unreadable RESTORING record (${record.damaged}): it belonged to a namespace that ended with a crash of the host`)
    return []
  }
  const removed: Array<{ key: string; id: number }> = []
  if (record.ns === ns) {
    // Killed after it recorded its lineage: it had finished (see restore()).
    const lineage = readLineage(state)
    if (lineage.known && lineage.record.generation === record.generation) {
      clear()
      return []
    }
    const ids = new Set(record.created.map((c) => c.id))
    const keys = new Set(record.keys)
    for (const s of shm.list()) {
      // cpid catches a segment created after the record's last update; the
      // key check keeps us off other containers of a pod (their pid 1 is ours too).
      const ours = ids.has(s.id) || (s.cpid === record.pid && keys.has(formatKey(s.key)))
      if (s.nattch !== 0 || s.dest || !ours) continue
      try {
        shm.remove(s.id, { asUid: s.cuid, asGid: s.cgid })
        removed.push({ key: formatKey(s.key), id: s.id })
      } catch (e) {
        log.log('warn', 'restore.cleanup', `could not remove segment ${formatKey(s.key)} (id ${s.id}) left by a killed restore: ${(e as Error).message}`)
      }
    }
    const objects = undoKilledObjects(record, currentPowers(), log)
    log.log('warn', 'restore.cleanup', `a restore of ${record.generation} was killed in this namespace; removed the ${removed.length} segment(s) and ${objects.length} other object(s) it had created`, { removed, objects })
  }
  clear()
  return removed
}

/** Check the namespace's limits and the memory cgroup before creating anything. */
function checkLimits(segments: SegmentRecord[]): void {
  const limits = shm.limits()
  const problems: string[] = []
  if (limits.segments + segments.length > limits.shmmni) {
    problems.push(`${segments.length} segments would exceed SHMMNI (${limits.shmmni}, ${limits.segments} in use): raise kernel.shmmni`)
  }
  for (const s of segments) {
    if (s.size > limits.shmmax) problems.push(`segment ${s.key} is ${s.size} bytes, above SHMMAX (${limits.shmmax}): raise kernel.shmmax`)
  }
  const pages = segments.reduce((n, s) => n + Math.ceil(s.size / limits.pageSize), 0)
  if (limits.totalPages + pages > limits.shmall) {
    problems.push(`${pages} pages would exceed SHMALL (${limits.shmall} pages, ${limits.totalPages} in use): raise kernel.shmall`)
  }
  const resident = segments.reduce((n, s) => n + s.dataChunks * s.chunkSize, 0)
  const max = memoryLimit()
  if (max !== undefined && resident > max) {
    problems.push(`the data (${resident} bytes) is more than the memory cgroup allows (memory.max ${max}): raise the container's memory limit`)
  }
  if (problems.length) throw new Error(`cannot restore: ${problems.join('; ')}`)
}

function createFlags(seg: SegmentRecord): number {
  const c = native.shmConstants
  let flags = c.IPC_CREAT | c.IPC_EXCL | 0o600
  if (seg.hugetlb) flags |= c.SHM_HUGETLB | (Math.log2(seg.pageSize) << c.SHM_HUGE_SHIFT)
  return flags
}

/** Create one segment under its creator's identity, with its saved id when we can choose ids. */
function createSegment(seg: SegmentRecord, who: Identity, chooseId: boolean): number {
  const key = parseKey(seg.key)
  const create = () => native.shmGet(key, seg.size, createFlags(seg), who.uid, who.gid)
  try {
    if (!chooseId) return create()
    // shm_next_id is one value per namespace: creations run one at a time,
    // and a failed shmget leaves it armed, so disarm it then.
    setNextId(seg.id)
    try {
      return create()
    } catch (e) {
      disarmNextId()
      throw e
    }
  } catch (e) {
    const err = systemError(e, `segment ${seg.key}, ${seg.size} bytes`) as Error & { code?: string }
    if (seg.hugetlb && (err.code === 'ENOMEM' || err.code === 'EPERM' || err.code === 'EINVAL')) {
      err.message += ` (a ${seg.pageSize}-byte huge page segment: the host's huge page pool has no room, or shmkeep lacks CAP_IPC_LOCK / membership of vm.hugetlb_shm_group)`
    }
    throw err
  }
}

/**
 * A generation whose segments are all created, filled, verified and given
 * their final mode and owner — not yet recorded as finished. `undo` removes
 * every one of them: whatever fails after this (a full volume refusing LIVE
 * or CURRENT, a TERM) leaves the namespace as it was.
 */
interface Restored {
  created: Created[]
  undo(): void
}

async function restoreGeneration(
  state: StateDir,
  name: string,
  options: RestoreOptions & { readOnly?: string },
  powers: Powers,
  ns: string,
  report: RestoreReport,
  log: Logger,
): Promise<Restored> {
  let gen: GenerationRecord
  const metas: SegmentRecord[] = []
  let payloads: Payload[] = []
  try {
    gen = state.readGeneration(name)
    for (const entry of gen.segments) {
      safeName(entry.data)
      metas.push(state.readSegment(name, entry))
    }
    // Small objects are read and verified whole before anything is created.
    if (gen.objects) payloads = readObjects(state.path(name), gen.objects)
  } catch (e) {
    if (e instanceof StateFileError || e instanceof ObjectDamage) throw new DamagedError(e.message)
    throw e // EIO and the like: not proof of damage, nothing is quarantined
  }
  options.signal?.throwIfAborted()

  const onConflict = options.onConflict ?? 'fail'
  const segmentsHere = shm.list().filter((s) => !s.dest)
  const live = new Map(segmentsHere.filter((s) => s.key !== 0).map((s) => [s.key, s]))
  // An IPC_PRIVATE segment is "the same" only by its id.
  const livePrivate = new Map(segmentsHere.filter((s) => s.key === 0).map((s) => [s.id, s]))
  const outcomes: SegmentRestore[] = metas.map((m) => ({ key: m.key, savedId: m.id, size: m.size, status: 'not-restored', bytesRead: 0, durationMs: 0 }))
  const todo: Array<{ meta: SegmentRecord; out: SegmentRestore; replace?: shm.ShmStat }> = []
  const conflicts: string[] = []
  const ids = nextIdControl()
  const take = segmentPredicate(options.filter)
  metas.forEach((meta, i) => {
    const out = outcomes[i]!
    const key = parseKey(meta.key)
    const existing = key === 0 ? livePrivate.get(meta.id) : live.get(key)
    if (!take({ ...meta, key } as unknown as shm.ShmStat)) {
      out.status = 'skipped'
      out.reason = 'left out by the filter'
      return
    }
    if (key === 0 && !ids.ok) {
      out.reason = `an IPC_PRIVATE segment can only be found again by its id, and ids cannot be kept here (${ids.reason})`
      return
    }
    if (existing) {
      if (onConflict === 'skip') {
        out.status = 'skipped'
        out.reason = `key exists here already (id ${existing.id})`
        return
      }
      if (onConflict === 'fail') conflicts.push(`${meta.key} (id ${existing.id})`)
      else if (existing.nattch > 0) conflicts.push(`${meta.key} (id ${existing.id}, ${existing.nattch} attached: not replaced while in use)`)
    }
    todo.push({ meta, out, replace: existing })
  })
  // Replacements last: a failure before them leaves every live segment alone.
  todo.sort((a, b) => Number(a.replace !== undefined) - Number(b.replace !== undefined))
  report.segments = outcomes
  if (conflicts.length) throw new Error(`cannot restore ${name}: these keys have segments here already: ${conflicts.join(', ')} (onConflict: 'skip' keeps them, onConflict: 'replace' replaces unused ones)`)
  checkLimits(todo.map((t) => t.meta))
  if (!ids.ok && todo.length) report.idsNotKept = ids.reason
  const objects = new ObjectRestorePlan(gen.objects, payloads, { onConflict, semFromCheckpoint: options.semFromCheckpoint, filter: options.filter, powers, log })
  report.objects = objects.outcomes
  if (objects.idsNotKept.length) report.idsNotKept = [report.idsNotKept, ...objects.idsNotKept].filter(Boolean).join('; ')

  // The copy workers poll this between chunks: an abort (a TERM) stops a big
  // segment's restore within a chunk, and the restore is undone.
  const cancel = cancelTokenFor(options.signal)
  // Replacing destroys live segments: make sure what replaces them is good
  // first, so a damaged generation never leaves the namespace emptier.
  for (const t of todo) {
    if (!t.replace) continue
    const check = await verifySaved(state.path(name, t.meta.data), t.meta, { cancel }).catch((e: Error) => {
      if (options.signal?.aborted) throw e
      return { badChunks: [-1], error: e.message }
    })
    if (check.badChunks.length) {
      throw new DamagedError(`segment ${t.meta.key} (saved id ${t.meta.id}): ${'error' in check ? check.error : `chunk ${check.badChunks.join(', ')} of ${t.meta.data} fails its checksum`}; the live segment was not replaced`)
    }
  }

  const created: Created[] = []
  const replaced: string[] = []
  // RESTORING: the plan once, then each segment created appended before a
  // byte goes into it (src/state/statedir.ts) — what lets the next restore in
  // this namespace remove what a killed one created.
  const packs = new PackFiles()
  // From a read-only state dir nothing is recorded: the restore still undoes
  // itself on any failure or TERM; only a SIGKILL halfway leaves segments the
  // next restore cannot tell from live state (restore() says so).
  const restoring = options.readOnly ? { created() {}, close() {} } : state.startRestoring({
    ns,
    pid: process.pid,
    generation: name,
    startedAt: new Date().toISOString(),
    keys: [...todo.map((t) => t.meta.key), ...objects.keys],
    created: [],
  })
  const removeCreated = () => {
    for (const c of created.splice(0)) {
      try {
        shm.remove(c.id, { asUid: c.as.uid, asGid: c.as.gid })
      } catch (e) {
        log.log('error', 'restore.undo', `could not remove segment ${c.key} (id ${c.id}) after a failed restore: ${(e as Error).message}`)
      }
    }
  }
  const progress = startProgress(log, 'restore', todo.reduce((n, t) => n + t.meta.size, 0))
  const counted = cancelTokenFor(options.signal, progress) // as `cancel`, and its bytes are the restore's progress
  try {
    for (const { meta, out, replace } of todo) {
      options.signal?.throwIfAborted()
      const started = performance.now()
      if (replace) {
        shm.remove(replace.id, { asUid: replace.cuid, asGid: replace.cgid })
        replaced.push(`${meta.key} (id ${replace.id})`)
      }
      const who = creatorIdentity(meta, powers)
      const id = createSegment(meta, who, ids.ok)
      created.push({ key: meta.key, id, as: who })
      restoring.created(meta.key, id)
      out.id = id
      out.idKept = id === meta.id
      if (parseKey(meta.key) === 0 && !out.idKept) {
        throw new Error(`IPC_PRIVATE segment (saved id ${meta.id}) came back as id ${id}: that id is taken here, and the app could not find it`)
      }
      let check
      try {
        check = await restoreSaved(state.path(name, meta.data), meta, { id, uid: who.uid, gid: who.gid }, true, { packs, cancel: counted })
      } catch (e) {
        const raw = e as { code?: string; errno?: number; message: string }
        // The data file is missing, not a file, the wrong size or a link:
        // damage (another generation may do). Anything else — EIO (a
        // network volume's hiccup, or a bad sector), EMFILE, EACCES,
        // ENOMEM, EINTR — is not proof of damage: the restore fails naming
        // the file and errno, and nothing is quarantined.
        const damageErrno = [os.constants.errno.ENOENT, os.constants.errno.ELOOP, os.constants.errno.EISDIR, os.constants.errno.EINVAL, os.constants.errno.ENXIO]
        const syscall = (e as { syscall?: string }).syscall ?? ''
        if (raw.code === 'ESIZE' || raw.code === 'ETABLE' || (raw.errno !== undefined && damageErrno.includes(raw.errno) && ['open', 'fstat', 'pread', 'read', 'lseek'].includes(syscall))) {
          throw new DamagedError(`segment ${meta.key} (saved id ${meta.id}): ${state.path(name, meta.data)}: ${(systemError(e, meta.data) as Error).message}`)
        }
        if (['open', 'fstat', 'pread', 'read', 'lseek'].includes(syscall)) {
          const err = systemError(e, state.path(name, meta.data)) as Error & { code?: string }
          throw new Error(`segment ${meta.key}: ${state.path(name, meta.data)}: ${err.code ?? 'error'} in ${syscall} (${err.message}; not proof of damage: nothing was quarantined)`)
        }
        throw systemError(e, `segment ${meta.key}, id ${id}`)
      }
      out.bytesRead = check.bytesRead
      out.durationMs = performance.now() - started
      if (check.badChunks.length) {
        const reason = `chunk ${check.badChunks.join(', ')} of ${meta.data} fails its checksum`
        if (!options.partial) throw new DamagedError(`segment ${meta.key} (saved id ${meta.id}): ${reason}`)
        out.status = 'failed'
        out.reason = reason
        shm.remove(id, { asUid: who.uid, asGid: who.gid })
        created.pop()
        log.log('error', 'restore.bad-segment', `segment ${meta.key} not restored: ${reason}`, { key: meta.key })
        continue
      }
      out.status = 'restored'
      progress.advance(meta.size)
    }
    progress.end()
    objects.create()
    // Every chunk verified: now, and only now, the segments get their real mode and owner.
    const byId = new Map(created.map((c) => [c.id, c]))
    for (const { meta, out } of todo) {
      if (out.status !== 'restored') continue
      const c = byId.get(out.id!)!
      shm.set(out.id!, { uid: meta.uid, gid: meta.gid, mode: meta.mode, asUid: c.as.uid, asGid: c.as.gid })
    }
    objects.finish()
    options.signal?.throwIfAborted()
  } catch (e) {
    progress.end()
    objects.undo()
    removeCreated()
    for (const o of outcomes) if (o.status === 'restored') o.status = 'not-restored'
    clearRestoringQuietly(state, log)
    if (replaced.length && e instanceof Error) {
      e.message += `; the live segment(s) ${replaced.join(', ')} had been replaced (onConflict: 'replace') and are gone`
    }
    throw e
  } finally {
    restoring.close()
    packs.close()
  }
  report.generation = name
  // What the generation itself says it lacks (src/snapshot.ts records it).
  for (const u of gen.unsaved ?? []) {
    log.log('warn', 'restore.unsaved', `segment ${u.key} (id ${u.id}) is not in ${name}: it could not be saved then (${u.errno}: ${u.reason})`, { key: u.key, id: u.id })
  }
  if (gen.consistency === 'live') log.log('warn', 'restore.live', `${name} was taken while processes were attached to its segments (live): every chunk verifies, but the image may be torn across chunks`)
  return {
    created: [...created],
    undo() {
      objects.undo()
      removeCreated()
      for (const o of outcomes) if (o.status === 'restored') o.status = 'not-restored'
      report.generation = null
      if (replaced.length) log.log('error', 'restore.undo', `the live segment(s) ${replaced.join(', ')} had been replaced (onConflict: 'replace') and are gone`)
    },
  }
}

/** Remove RESTORING after an undo; a failure there only leaves a record the next restore cleans up. */
function clearRestoringQuietly(state: StateDir, log: Logger): void {
  try {
    state.clearRestoring()
  } catch (e) {
    log.log('warn', 'restore.record', `could not remove RESTORING (${(e as Error).message}): the next restore in this namespace removes it`)
  }
}

/**
 * Record in the namespace which generation its state now descends from. Not
 * being able to (a read-only state dir that never had a LINEAGE id, no room
 * for one more queue) does not fail the restore: the lineage is then unknown
 * and the next snapshot goes beside CURRENT, loudly — the safe side.
 */
function recordLineage(state: StateDir, report: RestoreReport, log: Logger, unrecorded?: string[]): Undo | undefined {
  report.parent = report.generation
  try {
    return writeLineage(state, report.generation, { newLine: true })
  } catch (e) {
    report.lineageNotRecorded = (e as Error).message
    const what = `no lineage record in this namespace (${report.lineageNotRecorded}): a later \`shmkeep snapshot\` here goes beside CURRENT`
    if (unrecorded) unrecorded.push(what) // read-only: said with the rest
    else log.log('warn', 'restore.lineage', `the lineage of this namespace could not be recorded (${report.lineageNotRecorded}): a later \`shmkeep snapshot\` here goes beside CURRENT`)
    return undefined
  }
}

/**
 * Candidates in order: the one asked for; else CURRENT then older main-line
 * generations. `repair` says CURRENT is unreadable or names no generation:
 * whatever is restored then becomes CURRENT.
 */
function candidates(state: StateDir, options: RestoreOptions, log: Logger): { names: string[]; repair: boolean; damage?: string } {
  if (options.generation) return { names: [state.generationDir(options.generation)], repair: false }
  const gens = state.generations()
  const current = state.readCurrent()
  const main = (limit: number) =>
    gens
      .filter((g) => g.seq < limit)
      .filter((g) => {
        try {
          return !state.readGeneration(g.name).side
        } catch {
          return true // damaged: it will be tried, fail verification and be quarantined
        }
      })
      .map((g) => g.name)
      .reverse()
  if ('error' in current) {
    log.log('error', 'restore.current', `${current.error}; falling back to the newest generation that verifies`)
    return { names: main(Infinity), repair: true, damage: current.error }
  }
  if (current.name === null) {
    if (gens.length) log.log('warn', 'restore.current', 'no CURRENT although generations exist (a first snapshot was killed before switching it): trying the newest')
    return { names: main(Infinity), repair: false }
  }
  const seq = gens.find((g) => g.name === current.name)?.seq
  if (seq === undefined) {
    log.log('error', 'restore.current', `CURRENT names ${current.name}, which is not in the state dir; falling back to the newest generation that verifies`)
    return { names: main(Infinity), repair: true, damage: `CURRENT names ${current.name}, which is not in the state dir` }
  }
  return { names: [current.name, ...main(seq).filter((n) => n !== current.name)], repair: false }
}

/**
 * Restore CURRENT (or options.generation) into this IPC namespace. Resolves
 * with generation null when the state dir holds nothing (a first start), or
 * with `warm: true` when the namespace already holds its state (see
 * `options.warm`). Throws {@link StateDirMissingError} when the state dir does
 * not exist (never "a first start"), a StateFileError when it cannot be
 * trusted, and {@link RestoreError} with the namespace as it was before.
 */
export async function restore(options: RestoreOptions): Promise<RestoreReport> {
  checkEntryOptions('restore', options)
  const log = options.log ?? silentLogger
  const started = performance.now()
  const state = StateDir.open(options.stateDir, { log, warn: true, insecure: options.insecureStateDir })
  const report: RestoreReport = { stateDir: state.dir, generation: null, rejected: [], segments: [], objects: [], cleanedUp: [], warm: false, bytes: 0, durationMs: 0 }
  // A read-only state dir (a volume mounted ro into the container that only
  // restores): read it under a shared lock, write nothing there.
  const readOnly = state.readOnly()
  if (readOnly) report.stateDirReadOnly = readOnly
  const lockOptions = { timeoutMs: options.lockTimeoutMs, signal: options.signal }
  const lock = await (readOnly ? state.readLock(lockOptions) : state.lock(lockOptions)).catch((e) => {
    if (options.signal?.aborted) throw new RestoreError(`restore interrupted by ${String(options.signal.reason)} while waiting for the state dir's lock: nothing restored`, report)
    throw e
  })
  try {
    const ns = ipcNamespaceId()
    report.cleanedUp = undoKilledRestore(state, ns, log)
    if (!readOnly) state.removeStaleTemporaries()
    // A warm namespace (a container restarted inside its pod) holds state at
    // least as new as any snapshot: keep it, unless told to ignore that.
    if ((options.warm ?? 'keep') === 'keep') {
      const w = warmth(state, ns, new Set(shm.list().filter((s) => !s.dest).map((s) => formatKey(s.key))), options.filter)
      if (w.warm) {
        report.warm = true
        report.warmReason = w.why
        report.live = w.live
        if (w.lineage.known) report.parent = w.lineage.record.generation
        log.log('info', 'restore.warm', `nothing restored: ${w.why}; the live state is kept`, { live: w.live })
        report.durationMs = performance.now() - started
        return report
      }
    }
    const powers = currentPowers()
    /** What a read-only state dir kept from being recorded (one warning at the end). */
    const unrecorded: string[] = []
    const { names, repair, damage } = candidates(state, options, log)
    // A damaged CURRENT with nothing to fall back to is not a first start:
    // starting empty and snapshotting would bury whatever CURRENT meant.
    if (damage && names.length === 0) {
      throw new Error(`${damage}, and no other generation is here to fall back to (remove CURRENT to start empty on purpose)`)
    }
    let restored: Restored | undefined
    let lineage: Undo | undefined
    for (const name of names) {
      try {
        restored = await restoreGeneration(state, name, { ...options, readOnly }, powers, ns, report, log)
        break
      } catch (e) {
        if (!(e instanceof DamagedError)) throw e
        report.rejected.push({ generation: name, reason: e.message })
        log.log('error', 'restore.rejected', `generation ${name} cannot be restored: ${e.message}`)
        if (options.generation || options.partial) throw e
      }
    }
    // After a fallback, the damaged generations are moved aside (never
    // deleted) and CURRENT is pointed at what the namespace now holds, so the
    // next snapshot continues this line instead of being written beside it.
    // When nothing could be restored, the state dir stays exactly as it was.
    //
    // Everything from here on is inside all-or-nothing: a failure (a full
    // volume refusing CURRENT or LIVE, a TERM) removes every segment restored.
    if (restored) {
      const done = restored
      try {
        if ((report.rejected.length || repair) && readOnly) {
          unrecorded.push(`CURRENT was not pointed at ${report.generation} (the generation(s) that failed stay where they are)`)
        } else if (report.rejected.length || repair) {
          for (const r of report.rejected) {
            r.quarantinedAs = state.quarantine(r.generation)
            if (r.quarantinedAs) log.log('warn', 'restore.quarantine', `moved the damaged ${r.generation} aside as ${r.quarantinedAs}`)
          }
          state.writeCurrent(report.generation!)
          log.log('warn', 'restore.fallback', `restored ${report.generation} instead; CURRENT now names it`)
        }
        options.signal?.throwIfAborted()
        // Lineage first: a restore killed between the two is then seen as
        // finished (RESTORING's segments are the live state), not half done.
        lineage = recordLineage(state, report, log, readOnly ? unrecorded : undefined)
        if (!readOnly) state.clearRestoring()
      } catch (e) {
        lineage?.undo()
        done.undo()
        clearRestoringQuietly(state, log)
        throw e
      }
    } else if (report.rejected.length === 0 && !damage) {
      recordLineage(state, report, log, readOnly ? unrecorded : undefined) // a first start: its snapshots may become CURRENT
    }
    if (readOnly && (report.generation || unrecorded.length)) {
      // Said once, with everything that could not be recorded.
      if (report.generation) unrecorded.unshift('no RESTORING record while it ran (a restore killed by SIGKILL halfway would have left segments the next one takes for live state)')
      log.log('warn', 'restore.read-only', `the state dir cannot be written (${readOnly}): restored without writing anything there — ${unrecorded.join('; ')}`)
    }
    if (report.generation === null && report.rejected.length) {
      throw new Error(`no generation verifies: ${report.rejected.map((r) => `${r.generation}: ${r.reason}`).join('; ')}`)
    }
    report.bytes = report.segments.reduce((n, s) => n + (s.status === 'restored' ? s.size : 0), 0)
    report.durationMs = performance.now() - started
    if (report.idsNotKept) {
      const moved = report.segments.filter((s) => s.status === 'restored' && !s.idKept)
      if (moved.length) log.log('warn', 'restore.ids', `ids not kept (${report.idsNotKept}): ${moved.map((s) => `${s.key} ${s.savedId}→${s.id}`).join(', ')}`)
    }
    return report
  } catch (e) {
    report.durationMs = performance.now() - started
    if (options.signal?.aborted) {
      const why = options.signal.reason
      throw new RestoreError(`restore interrupted by ${typeof why === 'string' ? why : 'an abort'}: undone, nothing restored`, report)
    }
    throw new RestoreError(`restore failed, nothing restored: ${e instanceof Error ? e.message : String(e)}`, report)
  } finally {
    lock.release()
  }
}
