/**
 * Adopt a generation written beside CURRENT (lineage unknown, another
 * writer): check every chunk of it, then point CURRENT at it. The command
 * `run` and `snapshot` print when they write a side generation.
 */
import { verify } from './inspect'
import { silentLogger, type Logger } from './log'
import { readLineage, writeLineage } from './state/lineage'
import { StateDir } from './state/statedir'
import { QUARANTINE_PREFIX } from './state/format'

export interface AdoptOptions {
  stateDir: string
  generation: string
  lockTimeoutMs?: number
  log?: Logger
}

export interface AdoptReport {
  generation: string
  /** What CURRENT named before (null: nothing; or the error that made it unreadable). */
  previous: string | null
}

export async function adopt(options: AdoptOptions): Promise<AdoptReport> {
  const log = options.log ?? silentLogger
  const state = StateDir.open(options.stateDir)
  const name = state.generationDir(options.generation)
  if (name.startsWith(QUARANTINE_PREFIX)) {
    throw new Error(`${name} was moved aside because it failed verification: restore it by name (shmkeep restore --generation ${name}), check the app, then snapshot with --force`)
  }
  const lock = await state.lock({ timeoutMs: options.lockTimeoutMs })
  try {
    const check = await verify(state.dir, name)
    const bad = check.generations.find((g) => !g.ok)
    if (bad) throw new Error(`${name} does not verify (${bad.error ?? bad.segments.filter((s) => !s.ok).map((s) => `segment ${s.key}: ${s.error ?? `chunk(s) ${s.badChunks.join(', ')}`}`).join('; ')}): CURRENT unchanged`)
    const current = state.readCurrent()
    const previous = 'name' in current ? current.name : current.error
    state.writeCurrent(name)
    log.log('info', 'adopt', `CURRENT now names ${name} (it named ${previous ?? 'nothing'})`, { generation: name, previous })
    // Run inside the namespace that holds this state (docker exec), its
    // lineage follows CURRENT too.
    if (readLineage(state).known) writeLineage(state, name)
    return { generation: name, previous }
  } finally {
    lock.release()
  }
}
