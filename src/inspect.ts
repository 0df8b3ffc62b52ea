/**
 * Looking at a state dir: its generations, and whether their bytes verify.
 */
import { native } from './native'
import { StateFileError } from './state/files'
import type { GenerationRecord, SegmentRecord } from './state/format'
import { StateDir, safeName } from './state/statedir'

export interface GenerationSummary {
  name: string
  seq: number
  /** Whether CURRENT names it. */
  current: boolean
  createdAt?: string
  parent?: string | null
  reason?: string
  clean?: boolean
  side?: boolean
  inconsistent?: boolean
  segments?: number
  bytes?: number
  /** Why its GENERATION file cannot be read. */
  error?: string
}

/** Every generation of a state dir, oldest first. */
export function listGenerations(stateDir: string): GenerationSummary[] {
  const state = StateDir.open(stateDir)
  const current = state.readCurrent()
  const currentName = 'name' in current ? current.name : null
  return state.generations().map((g) => {
    const base = { name: g.name, seq: g.seq, current: g.name === currentName }
    try {
      const r = state.readGeneration(g.name)
      return {
        ...base,
        createdAt: r.createdAt,
        parent: r.parent,
        reason: r.reason,
        clean: r.clean,
        side: r.side,
        inconsistent: r.inconsistent !== undefined,
        segments: r.segments.length,
        bytes: r.bytes,
      }
    } catch (e) {
      return { ...base, error: e instanceof Error ? e.message : String(e) }
    }
  })
}

export interface SegmentVerification {
  key: string
  id: number
  size: number
  ok: boolean
  /** Chunks whose checksum does not match. */
  badChunks: number[]
  /** What is wrong when it is not a chunk (a missing or damaged file). */
  error?: string
  bytesRead: number
}

export interface GenerationVerification {
  name: string
  ok: boolean
  /** The GENERATION file itself cannot be read. */
  error?: string
  segments: SegmentVerification[]
}

export interface VerifyReport {
  ok: boolean
  generations: GenerationVerification[]
}

async function verifyOne(state: StateDir, name: string): Promise<GenerationVerification> {
  let gen: GenerationRecord
  try {
    gen = state.readGeneration(name)
  } catch (e) {
    return { name, ok: false, error: (e as Error).message, segments: [] }
  }
  const segments: SegmentVerification[] = []
  for (const entry of gen.segments) {
    const base = { key: entry.key, id: entry.id, size: entry.size, badChunks: [] as number[], bytesRead: 0 }
    let meta: SegmentRecord
    try {
      meta = state.readSegment(name, entry)
      safeName(meta.data)
    } catch (e) {
      segments.push({ ...base, ok: false, error: (e as Error).message })
      continue
    }
    try {
      const r = await native.verifyFile({ path: state.path(name, meta.data), size: meta.size, chunkSize: meta.chunkSize, chunks: Buffer.from(meta.chunks, 'base64') })
      segments.push({ ...base, ok: r.badChunks.length === 0, badChunks: r.badChunks, bytesRead: r.bytesRead })
    } catch (e) {
      segments.push({ ...base, ok: false, error: `${meta.data}: ${(e as Error).message}` })
    }
  }
  return { name, ok: segments.every((s) => s.ok), segments }
}

/**
 * Check every chunk of a generation (default: CURRENT; 'all': every one)
 * against its checksum.
 */
export async function verify(stateDir: string, generation?: string | 'all'): Promise<VerifyReport> {
  const state = StateDir.open(stateDir)
  let names: string[]
  if (generation === 'all') {
    names = state.generations().map((g) => g.name)
  } else if (generation) {
    names = [generation]
  } else {
    const current = state.readCurrent()
    if ('error' in current) throw new StateFileError(state.path('CURRENT'), current.error)
    if (current.name === null) throw new StateFileError(state.path('CURRENT'), 'is missing: nothing to verify (give a generation or --all)', 'ENOENT')
    names = [current.name]
  }
  const generations: GenerationVerification[] = []
  for (const name of names) generations.push(await verifyOne(state, name))
  return { ok: generations.every((g) => g.ok), generations }
}
