/**
 * Which generations to keep. Never removed: what CURRENT names, the one the
 * running state descends from, and the newest taken at a clean stop. Besides
 * those, the newest `keep` of the main line and the newest `keep` side
 * generations (written beside CURRENT by a diverged writer: the operator has
 * to look at them, so they are not pushed out by the main line).
 *
 * Only complete generations count towards `keep`: one that could not save
 * every segment (partial) or whose GENERATION is unreadable never pushes out
 * a complete one, so pruning never leaves the state dir without the newest
 * `keep` complete generations. Every complete generation verified when it
 * was written (the checksums are of the bytes written: src/snapshot.ts).
 * Partial generations newer than the oldest kept complete one stay too.
 */
import fs from 'node:fs'
import type { Logger } from '../log'
import { independentOfCurrent } from './fallback'
import { fsyncDir } from './files'
import { isPartial, TMP_PREFIX, type GenerationRecord } from './format'
import type { StateDir } from './statedir'

export interface PruneOptions {
  /** Generations to keep on each line (0: keep all). */
  keep: number
  /** Names that must stay (e.g. the running state's parent). */
  protect?: Array<string | null>
  /** Only say what would go. */
  dryRun?: boolean
  log?: Logger
}

export interface PruneResult {
  removed: string[]
  kept: Array<{ name: string; why: string }>
}

export function prune(state: StateDir, options: PruneOptions): PruneResult {
  const result: PruneResult = { removed: [], kept: [] }
  if (options.keep <= 0) return result
  const gens = state.generations().reverse() // newest first
  const records = new Map<string, GenerationRecord | null>()
  for (const g of gens) {
    try {
      records.set(g.name, state.readGeneration(g.name))
    } catch {
      records.set(g.name, null) // unreadable: keep it, `verify` will show it
    }
  }
  const current = state.readCurrent()
  const why = new Map<string, string>()
  if ('name' in current && current.name) why.set(current.name, 'CURRENT')
  for (const p of options.protect ?? []) if (p && !why.has(p)) why.set(p, 'the running state descends from it')
  if ('name' in current && current.name) {
    const { independent } = independentOfCurrent(state, current.name, (name) => records.get(name) ?? undefined)
    if (independent && !why.has(independent)) why.set(independent, 'shares no data file with CURRENT: the fallback when one of those is damaged')
  }
  const newestClean = gens.find((g) => records.get(g.name)?.clean)
  if (newestClean && !why.has(newestClean.name)) why.set(newestClean.name, 'newest taken at a clean stop')
  let main = 0
  let side = 0
  for (const g of gens) {
    const r = records.get(g.name)
    if (r === null || r === undefined) {
      why.set(g.name, 'unreadable (see shmkeep verify)')
    } else if (isPartial(r)) {
      // Never counted: it may not push out a complete generation.
      const line = r.side ? side : main
      if (line < options.keep && !why.has(g.name)) why.set(g.name, `partial (${(r.unsaved?.length ?? 0) + (r.objects?.unsaved?.length ?? 0)} object(s) not saved), newer than the newest ${options.keep} complete`)
    } else if (r.side) {
      if (side++ < options.keep && !why.has(g.name)) why.set(g.name, `among the newest ${options.keep} side generations`)
    } else if (main++ < options.keep && !why.has(g.name)) {
      why.set(g.name, `among the newest ${options.keep}`)
    }
  }
  for (const g of gens) {
    const reason = why.get(g.name)
    if (reason) {
      result.kept.push({ name: g.name, why: reason })
      continue
    }
    result.removed.push(g.name)
    if (options.dryRun) continue
    // Rename first: a prune killed halfway leaves a temporary (cleaned up by
    // the next writer), never a half-deleted generation that looks complete.
    const doomed = state.path(`${TMP_PREFIX}${g.name}.pruning`)
    fs.renameSync(g.path, doomed)
    fs.rmSync(doomed, { recursive: true, force: true })
  }
  if (result.removed.length && !options.dryRun) {
    fsyncDir(state.dir)
    options.log?.log('info', 'prune', `pruned ${result.removed.join(', ')}`, { removed: result.removed })
  }
  return result
}
