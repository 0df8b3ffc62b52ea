/**
 * `run --report-file PATH`: run's final report as one JSON object. run's
 * stdout belongs to the app, so the report never goes there; it is written
 * to its own file once run ends (replaced atomically: a reader sees the whole
 * report or none), in the shape `restore --json` and `snapshot --json` use
 * for the parts they share (docs/OPERATIONS.md, schema `shmkeep.run`).
 */
import fs from 'node:fs'
import path from 'node:path'
import type { RestoreReport } from '../restore'
import type { SnapshotReport } from '../snapshot'
import { replaceFile } from '../state/files'

export interface RunReport {
  command: string[]
  /** The restore's report (as `restore --json`), with `error` when it failed; null when none was tried. */
  restore: (RestoreReport & { error?: string }) | null
  /** The app: its pid, how its run ended (a stop signal, or on its own), its status; null when it never started. */
  app: { pid: number; ended?: 'stop' | 'exit'; status?: number; signal?: string; killed?: boolean } | null
  /** Periodic checkpoints: how many were written, skipped (another writer, a freeze that failed) and failed. */
  checkpoints: { taken: number; skipped: number; failed: number }
  /** The final snapshot's report (as `snapshot --json`), with `error` when it failed; null when none was taken. */
  snapshot: (SnapshotReport & { error?: string }) | null
  /** run's own exit status (the app's, or one of run's codes). */
  exitStatus?: number
  /** An error that ended run before its normal end. */
  error?: string
}

export function emptyRunReport(command: string[]): RunReport {
  return { command, restore: null, app: null, checkpoints: { taken: 0, skipped: 0, failed: 0 }, snapshot: null }
}

/**
 * Report versions that are not 1 (docs/OPERATIONS.md). 2: `unsaved[]` lists
 * every object not saved, of any kind (`kind`; version 1 listed segments
 * only) — in `snapshot --json` and in the run report's `snapshot`.
 */
const REPORT_VERSIONS: Record<string, number> = { 'shmkeep.snapshot': 2, 'shmkeep.run': 2 }

/** Body of a versioned JSON report (`--json` of every command, and this file). */
export function jsonReport(schema: string, body: object): string {
  return JSON.stringify({ schema, version: REPORT_VERSIONS[schema] ?? 1, ...body }, null, 2) + '\n'
}

/**
 * Checked before the app starts: the report's directory exists and is a
 * directory (a typo would otherwise be found only after the whole run).
 */
export function checkReportPath(file: string): string | undefined {
  const dir = path.dirname(path.resolve(file))
  try {
    if (!fs.statSync(dir).isDirectory()) return `${dir} is not a directory`
  } catch (e) {
    return `${dir}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (e as Error).message}`
  }
  try {
    if (fs.lstatSync(file).isDirectory()) return `${file} is a directory`
  } catch {
    // not there yet: fine
  }
  return undefined
}

/** Write the report: a temporary file beside PATH, fsynced, renamed over PATH. */
export function writeRunReport(file: string, report: RunReport): void {
  replaceFile(path.resolve(file), jsonReport('shmkeep.run', report))
}
