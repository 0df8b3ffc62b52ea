/**
 * Whether a state dir may be trusted. What a state dir holds is restored into
 * the container with the owners and modes it records — as root, a forged
 * generation becomes a root-owned segment with the forger's bytes (the CRCs
 * detect damage, they do not authenticate). So the dir, and everything in it,
 * must be writable only by root, by the user running shmkeep, and (the
 * trade-off Kubernetes `fsGroup` volumes need) by its group.
 *
 * Also: the place must be a real file system for state (not /proc, /sys or
 * /dev, whatever is mounted there), and the operator is told when the state
 * would not outlive the container (tmpfs, ramfs, no mount point at all).
 */
import fs from 'node:fs'
import path from 'node:path'
import { StateFileError } from './files'

/** The environment variable behind `--insecure-state-dir`. */
export const INSECURE_ENV = 'SHMKEEP_INSECURE_STATE_DIR'

/** Whether the operator said to trust any state dir (`--insecure-state-dir`). */
export function insecureFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[INSECURE_ENV]
  return v !== undefined && v !== '' && !['0', 'false', 'no', 'off'].includes(v.toLowerCase())
}

/** Kernel file systems that are not storage; refused by their path (Docker mounts a tmpfs on /dev). */
const NOT_STORAGE = ['/proc', '/sys', '/dev']

/** Why `real` (a real path) cannot hold state, or undefined. */
export function placeProblem(real: string): string | undefined {
  const under = NOT_STORAGE.find((p) => real === p || real.startsWith(p + '/'))
  return under && `${real}: is under ${under}, which is not storage: give --state-dir a volume's path`
}

const FIX = '(insecureStateDir: true to trust it anyway)'

/** Why one file of a state dir is not trustworthy, or undefined. */
function fileProblem(file: string, st: fs.Stats, uid: number): string | undefined {
  if (st.uid !== 0 && st.uid !== uid) {
    return `${file}: is owned by uid ${st.uid}, not by root or by uid ${uid} who runs shmkeep: that user could forge the state restored here. Fix: chown -R ${uid} on the state dir ${FIX}`
  }
  // A symbolic link's own mode means nothing (and shmkeep never follows one).
  if (!st.isSymbolicLink() && (st.mode & 0o002) !== 0) {
    return `${file}: is writable by every user (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): anyone could forge the state restored here. Fix: chmod o-w ${file} ${FIX}`
  }
  return undefined
}

/**
 * The first reason not to trust the state dir `dir` (an existing directory)
 * or anything in it (one level into generation directories), or undefined.
 * Group-writable is allowed: fsGroup volumes are group-writable and setgid by
 * design (docs/OPERATIONS.md, "Trust").
 */
export function trustProblem(dir: string, uid = process.geteuid?.() ?? 0): string | undefined {
  const top = fileProblem(dir, fs.statSync(dir), uid)
  if (top) return top
  for (const entry of fs.readdirSync(dir)) {
    const file = path.join(dir, entry)
    let st: fs.Stats
    try {
      st = fs.lstatSync(file)
    } catch {
      continue // removed meanwhile
    }
    const p = fileProblem(file, st, uid)
    if (p) return p
    if (!st.isDirectory() || !/gen-\d{12}/.test(entry)) continue
    let inner: string[]
    try {
      inner = fs.readdirSync(file)
    } catch {
      continue
    }
    for (const name of inner) {
      try {
        const q = fileProblem(path.join(file, name), fs.lstatSync(path.join(file, name)), uid)
        if (q) return q
      } catch {
        // removed meanwhile
      }
    }
  }
  return undefined
}

/** Throw the trust problem of `dir` as a StateFileError (code EUNTRUSTED), unless `insecure`. */
export function checkTrust(dir: string, insecure: boolean): void {
  if (insecure) return
  const problem = trustProblem(dir)
  if (problem) throw new StateFileError(dir, problem.startsWith(dir + ':') ? problem.slice(dir.length + 2) : problem, 'EUNTRUSTED')
}

const TMPFS_MAGIC = 0x01021994
const RAMFS_MAGIC = 0x858458f6

/** A warning when the state would die with the machine (tmpfs, ramfs), or undefined. */
export function volatileWarning(dir: string): string | undefined {
  let type: number
  try {
    type = fs.statfsSync(dir).type
  } catch {
    return undefined
  }
  if (type !== TMPFS_MAGIC && type !== RAMFS_MAGIC) return undefined
  return `the state dir ${dir} is on ${type === TMPFS_MAGIC ? 'tmpfs' : 'ramfs'}: its generations live in memory and die with the machine (or with the container, if the tmpfs is the container's own)`
}

/** The mount points of this mount namespace (/proc/self/mountinfo, field 5, octal escapes undone). */
export function mountPoints(text = readMountinfo()): Set<string> {
  const out = new Set<string>()
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4]
    if (field) out.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
  }
  return out
}

function readMountinfo(): string {
  try {
    return fs.readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return ''
  }
}

/**
 * A warning when `real` (a real path) is not a mount point: the state then
 * lives in the container's own file system, which survives a restart of the
 * container but not its removal. Judged from mountinfo, not st_dev (a bind
 * mount of a directory of the same file system has the same st_dev).
 */
export function mountWarning(real: string, mounts = mountPoints()): string | undefined {
  if (mounts.size === 0 || mounts.has(real)) return undefined
  return `the state dir ${real} is not a mount point: its generations live in the container's own file system, which survives a restart of this container but not its removal (mount a volume there)`
}
