/**
 * Which objects a command works on: `--kind` (shm, sem, msg, posix-shm,
 * mqueue, or all), `--key`, `--exclude-key` (lists and ranges: SysV kinds),
 * `--owner` (uid or user name), `--min-size`, `--max-size` (segments only).
 */
import fs from 'node:fs'
import { CONTAINER_ONLY_KINDS, KIND_NAMES, type KindName } from './kinds/kind'
import { KeyRanges, type KeyLike } from './keys'
import type { ShmStat } from './shm'

export interface SegmentFilter {
  /**
   * Only these kinds of object: "shm,sem,msg,posix-shm,mqueue" or "all" (or a
   * list of such strings). Default: all but posix-shm, which is taken by
   * default only when shmkeep is PID 1 of its container.
   */
  kinds?: string | string[]
  /** Only these keys: numbers, or strings such as "0x162e,0x1000-0x1fff" (or a list of them). */
  keys?: KeyLike | KeyLike[]
  /** Not these keys. */
  excludeKeys?: KeyLike | KeyLike[]
  /** Only segments owned by these uids or user names. */
  owners?: Array<number | string>
  /** Only segments of at least / at most this many bytes. */
  minSize?: number
  maxSize?: number
}

/** A uid from a number or a user name (looked up in /etc/passwd). */
export function resolveUid(owner: number | string): number {
  if (typeof owner === 'number') return owner
  if (/^\d+$/.test(owner)) return Number(owner)
  let passwd = ''
  try {
    passwd = fs.readFileSync('/etc/passwd', 'utf8')
  } catch {
    // fall through to the error below
  }
  const line = passwd.split('\n').find((l) => l.split(':')[0] === owner)
  if (!line) throw new TypeError(`unknown user "${owner}" (give a uid or a name from /etc/passwd)`)
  return Number(line.split(':')[2])
}

/** `--kind shm,sem,msg`: the kinds named, checked (TypeError for an unknown one); `all` is every kind. */
export function parseKinds(spec: string | readonly string[]): KindName[] {
  const names = (typeof spec === 'string' ? [spec] : [...spec]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean).flatMap((n) => (n === 'all' ? [...KIND_NAMES] : [n]))
  if (names.length === 0) throw new TypeError(`empty kind list (known: ${KIND_NAMES.join(', ')})`)
  for (const n of names) if (!(KIND_NAMES as readonly string[]).includes(n)) throw new TypeError(`unknown kind "${n}" (known: ${KIND_NAMES.join(', ')})`)
  return [...new Set(names)] as KindName[]
}

/** The file system mounted at /dev/shm in this mount namespace: type and source (/proc/self/mountinfo). */
export function devShmMount(): { fstype: string; source: string } | undefined {
  let text: string
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return undefined
  }
  let found: { fstype: string; source: string } | undefined
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (!right || left!.split(' ')[4] !== '/dev/shm') continue
    const [fstype, source] = right.split(' ')
    found = { fstype: fstype!, source: source! } // the last one is on top
  }
  return found
}

/**
 * Whether /dev/shm is a container's own, so that POSIX shm is taken by
 * default: shmkeep is PID 1 of its container (`run` as the entrypoint), and
 * /dev/shm is the tmpfs every engine mounts for a container or pod with the
 * source name `shm` (Docker, runc, podman, containerd and CRI-O all do). A
 * host's /dev/shm (source `tmpfs`, or `docker run --ipc=host`'s bind of it)
 * seen from a PID namespace alone is not taken unless `--kind` names it.
 */
export function containerDevShm(): { ok: boolean; why: string } {
  if (process.pid !== 1) return { ok: false, why: 'shmkeep is not PID 1 of a container' }
  // PID 1 of a container: its mounts are the engine's, looked at once.
  devShmVerdict ??= judgeDevShm()
  return devShmVerdict
}

let devShmVerdict: { ok: boolean; why: string } | undefined

function judgeDevShm(): { ok: boolean; why: string } {
  const m = devShmMount()
  if (!m) return { ok: false, why: 'nothing is mounted at /dev/shm in this mount namespace' }
  if (m.fstype !== 'tmpfs' || m.source !== 'shm') return { ok: false, why: `/dev/shm is a ${m.fstype} with source "${m.source}", not the "shm" tmpfs that container engines mount: it may be the host's` }
  return { ok: true, why: "/dev/shm is this container's own tmpfs" }
}

/** Whether a filter takes a kind (no `kinds`: every kind, POSIX shm only in a container's own /dev/shm). */
export function kindSelected(filter: SegmentFilter | undefined, kind: KindName): boolean {
  if (filter?.kinds !== undefined) return parseKinds(filter.kinds).includes(kind)
  return !CONTAINER_ONLY_KINDS.has(kind) || containerDevShm().ok
}

/** A predicate over segments; an empty filter takes all. */
export function segmentPredicate(filter: SegmentFilter = {}): (s: ShmStat) => boolean {
  if (!kindSelected(filter, 'shm')) return () => false
  const keys = filter.keys === undefined ? undefined : new KeyRanges(filter.keys)
  const exclude = filter.excludeKeys === undefined ? undefined : new KeyRanges(filter.excludeKeys)
  const owners = filter.owners?.map(resolveUid)
  return (s) =>
    (keys === undefined || keys.has(s.key)) &&
    (exclude === undefined || !exclude.has(s.key)) &&
    (owners === undefined || owners.includes(s.uid)) &&
    (filter.minSize === undefined || s.size >= filter.minSize) &&
    (filter.maxSize === undefined || s.size <= filter.maxSize)
}

/** Parse a size such as "4096", "64k", "1M", "2GiB". */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(text.trim())
  if (!m) throw new TypeError(`not a size: ${JSON.stringify(text)} (e.g. 4096, 64k, 1M, 2G)`)
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  return Number(m[1]) * unit
}
