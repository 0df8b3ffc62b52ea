/**
 * Facts about this process and its IPC namespace, read from /proc and /sys:
 * capabilities, the namespace's identity, per-segment rss/swap, the id
 * counter, shm_rmid_forced and the memory cgroup's limit.
 */
import fs from 'node:fs'
import { native } from './native'

/** Capability numbers we care about (linux/capability.h). */
export const CAP = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  SETGID: 6,
  SETUID: 7,
  IPC_LOCK: 14,
  IPC_OWNER: 15,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  CHECKPOINT_RESTORE: 40,
} as const

/** The effective capability set of this process (CapEff in /proc/self/status). */
export function effectiveCapabilities(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))
  return m ? BigInt('0x' + m[1]) : 0n
}

export function hasCapability(cap: number, caps = effectiveCapabilities()): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n
}

/**
 * A name for this IPC namespace that is unique on this host across reboots:
 * the boot id and the namespace's inode ("ipc:[4026531839]").
 */
export function ipcNamespaceId(): string {
  let boot = 'unknown-boot'
  try {
    boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  } catch {
    // Without it the inode alone still tells namespaces of one boot apart.
  }
  return `${boot}/${fs.readlinkSync('/proc/self/ns/ipc')}`
}

/** rss and swap (bytes) of each segment by id, from /proc/sysvipc/shm. */
export function segmentMemory(): Map<number, { rss: number; swap: number }> {
  const out = new Map<number, { rss: number; swap: number }>()
  let text: string
  try {
    text = fs.readFileSync('/proc/sysvipc/shm', 'utf8')
  } catch {
    return out
  }
  const lines = text.trim().split('\n')
  const head = lines.shift()?.trim().split(/\s+/) ?? []
  const col = (name: string) => head.indexOf(name)
  const [iId, iRss, iSwap] = [col('shmid'), col('rss'), col('swap')]
  if (iId < 0 || iRss < 0 || iSwap < 0) return out
  for (const line of lines) {
    const f = line.trim().split(/\s+/)
    out.set(Number(f[iId]), { rss: Number(f[iRss]), swap: Number(f[iSwap]) })
  }
  return out
}

/** kernel.shm_rmid_forced of this namespace: segments die with their last attacher. */
export function shmRmidForced(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/shm_rmid_forced', 'utf8').trim() === '1'
  } catch {
    return false
  }
}

/** The SysV kinds whose next id can be chosen: kernel.shm_next_id, sem_next_id, msg_next_id. */
export type IdCounter = 'shm' | 'sem' | 'msg'
const nextIdFile = (kind: IdCounter) => `/proc/sys/kernel/${kind}_next_id`

/**
 * Whether we can choose the id of the next object of a kind: writing
 * kernel.<kind>_next_id needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE and a
 * writable /proc/sys (not the case in an ordinary Docker container). Returns
 * the reason when we cannot.
 */
export function nextIdControl(kind: IdCounter = 'shm'): { ok: true } | { ok: false; reason: string } {
  try {
    const fd = fs.openSync(nextIdFile(kind), 'w')
    fs.closeSync(fd)
    const caps = effectiveCapabilities()
    if (!hasCapability(CAP.SYS_ADMIN, caps) && !hasCapability(CAP.CHECKPOINT_RESTORE, caps)) {
      return { ok: false, reason: `no CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE to write kernel.${kind}_next_id` }
    }
    return { ok: true }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EROFS') return { ok: false, reason: '/proc/sys is read-only here (as in an unprivileged container)' }
    if (code === 'ENOENT') return { ok: false, reason: `this kernel has no kernel.${kind}_next_id` }
    return { ok: false, reason: `kernel.${kind}_next_id cannot be written (${code})` }
  }
}

/**
 * kernel.<kind>_next_id, opened once per process and written at offset 0
 * each time: a restore of 2000 segments spent more time opening and closing
 * the file than creating the segments. The write goes to the IPC namespace
 * of the writer, which a process never leaves. Dropped after any failed
 * write (the next one opens it again).
 */
const nextIdFds = new Map<IdCounter, number>()

function writeNextId(kind: IdCounter, text: string): void {
  let fd = nextIdFds.get(kind)
  if (fd === undefined) {
    fd = fs.openSync(nextIdFile(kind), 'w')
    nextIdFds.set(kind, fd)
  }
  try {
    fs.writeSync(fd, text, 0)
  } catch (e) {
    nextIdFds.delete(kind)
    fs.closeSync(fd)
    throw e
  }
}

/** Arm the id counter for the next shmget (semget, msgget). */
export function setNextId(id: number, kind: IdCounter = 'shm'): void {
  writeNextId(kind, `${id}\n`)
}

/**
 * Disarm the id counter after a *get that failed (a successful one disarms
 * it itself): otherwise the app's next object would take the id. Kernels that
 * refuse -1 get it consumed by a small IPC_PRIVATE object, removed at once.
 */
export function disarmNextId(kind: IdCounter = 'shm'): void {
  try {
    writeNextId(kind, '-1\n')
    return
  } catch {
    // EINVAL on kernels whose sysctl takes 0.. only
  }
  try {
    const flags = native.shmConstants.IPC_CREAT | 0o600
    if (kind === 'shm') native.shmRemove(native.shmGet(0, 1, flags, -1, -1), -1, -1)
    else if (kind === 'sem') native.semRemove(native.semGet(0, 1, flags, -1, -1), -1, -1)
    else native.msgRemove(native.msgGet(0, flags, -1, -1), -1, -1)
  } catch {
    // nothing more we can do; the restore reports its own error
  }
}

/**
 * The memory cgroup's limit for this process in bytes (cgroup v2 memory.max,
 * or v1 memory.limit_in_bytes on hosts that still have it), undefined when
 * unlimited or unknown.
 */
export function memoryLimit(): number | undefined {
  let lines: string[]
  try {
    lines = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')
  } catch {
    return undefined
  }
  const read = (file: string) => {
    try {
      return fs.readFileSync(file, 'utf8').trim()
    } catch {
      return undefined
    }
  }
  const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l))
  if (v1) {
    const value = Number(read(`/sys/fs/cgroup/memory${v1.slice(v1.lastIndexOf(':') + 1)}/memory.limit_in_bytes`))
    // v1 says "unlimited" with a number near 2^63.
    return Number.isFinite(value) && value > 0 && value < 2 ** 62 ? value : undefined
  }
  const v2 = lines.find((l) => l.startsWith('0::'))
  const value = v2 && read(`/sys/fs/cgroup${v2.slice(3)}/memory.max`)
  return value && value !== 'max' ? Number(value) : undefined
}
