/**
 * How a save tells a segment's holes (pages never touched: zeros that must
 * not be read, or reading them would allocate them and fill the container's
 * memory) from its data — without ever saving a swapped-out page as zeros.
 *
 * mincore() calls a page absent whether it was never touched or is swapped
 * out, and /proc/sysvipc/shm's swap column is only a sample in time. What
 * does tell them apart is SEEK_DATA/SEEK_HOLE and pread on the attachment's
 * /proc/self/map_files entry (swapped pages are data; reading a hole there
 * allocates nothing), but opening it needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE, which Docker's defaults lack. So:
 *
 * - map_files opens: find holes and read through it (`mapFiles`);
 * - the machine has no swap (SwapTotal 0): absent pages are holes (`mincore`);
 * - the image is stopped or frozen: absent pages are holes while the
 *   segment's swap column is 0, checked after each chunk's mincore
 *   (`mincoreSwapCheck`; once it is not, every page is read);
 * - otherwise populate and read every page (`read`): correct, but holes
 *   cannot be kept (the segment fills in) — logged.
 */
import fs from 'node:fs'
import { native } from './native'

/** How native/residency.cc finds the pages to read (see SegmentReader). */
export type Holes = 'mapFiles' | 'mincore' | 'mincoreSwapCheck' | 'read'

export interface HolesFacts {
  /** /proc/self/map_files opens for a shared mapping of ours. */
  mapFilesOpens: boolean
  /** SwapTotal of /proc/meminfo, bytes (undefined: unknown). */
  swapTotal: number | undefined
  /** No other process writes the segments during the copy (stopped or frozen image). */
  quiet: boolean
}

export interface HolesDecision {
  holes: Holes
  /** Whether never-touched pages stay unread (and holes in the data file). */
  keepsHoles: boolean
  /** Why, for the log. */
  reason: string
}

/** The decision, from the facts (pure). */
export function decideHoles(f: HolesFacts): HolesDecision {
  if (f.mapFilesOpens) return { holes: 'mapFiles', keepsHoles: true, reason: 'holes found with SEEK_DATA on /proc/self/map_files' }
  if (f.swapTotal === 0) return { holes: 'mincore', keepsHoles: true, reason: 'no swap on this machine: pages mincore calls absent were never touched' }
  if (f.quiet) {
    return {
      holes: 'mincoreSwapCheck',
      keepsHoles: true,
      reason: "absent pages skipped while the segment's swap column in /proc/sysvipc/shm is 0 (checked after each chunk)",
    }
  }
  return {
    holes: 'read',
    keepsHoles: false,
    reason:
      'this machine has swap, /proc/self/map_files does not open (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE) and the app runs: every page is read, so never-touched pages are allocated (holes cannot be kept)',
  }
}

let mapFilesCache: boolean | undefined

/** SwapTotal in bytes, undefined when /proc/meminfo does not say. */
export function swapTotal(): number | undefined {
  try {
    const m = /^SwapTotal:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

/** The decision on this machine, for an image that is `quiet` (stopped or frozen) or not. */
export function holesHere(quiet: boolean): HolesDecision {
  return decideHoles({ mapFilesOpens: mapFilesHere(), swapTotal: swapTotal(), quiet })
}

/**
 * Whether /proc/self/map_files opens for this process (asked once). Where it
 * does, a save reads a segment with pread on its file and a restore writes
 * a new segment with pwrite: no page of it enters the process's page tables
 * (native/residency.cc, native/restore.cc), about half the CPU.
 */
export function mapFilesHere(): boolean {
  mapFilesCache ??= native.mapFilesOpens()
  return mapFilesCache
}
