/**
 * Which identity may read or create a segment. Root in a Docker container has
 * neither CAP_IPC_OWNER nor CAP_SYS_ADMIN, so it cannot attach a 0600 segment
 * that uid 1000 owns — but it has CAP_SETUID/CAP_SETGID, so it can become that
 * uid for the one thread that attaches (src/native: ThreadIdentity).
 */
import { CAP, effectiveCapabilities, hasCapability } from './system'

/** A uid/gid to act as; -1 means "as we are". */
export interface Identity {
  uid: number
  gid: number
}

export const SELF: Identity = { uid: -1, gid: -1 }

/** What a segment's permission check looks at. */
interface Perm {
  mode: number
  uid: number
  gid: number
  cuid: number
  cgid: number
}

/** What this process may do about identities, read once per operation. */
export interface Powers {
  euid: number
  ipcOwner: boolean
  canSwitch: boolean
}

export function currentPowers(): Powers {
  const caps = effectiveCapabilities()
  return {
    euid: process.geteuid?.() ?? -1,
    ipcOwner: hasCapability(CAP.IPC_OWNER, caps),
    canSwitch: hasCapability(CAP.SETUID, caps) && hasCapability(CAP.SETGID, caps),
  }
}

/** A uid/gid that is in none of the given classes (for "group" and "other" access). */
function unrelated(taken: number[]): number {
  for (let n = 65534; n > 60000; n--) if (!taken.includes(n)) return n
  return 59999
}

/**
 * The identity under which to attach `seg` read-only, or an error message
 * when no identity may. The kernel checks the owner class first (euid is uid
 * or cuid), then the group class, then other — an owner cannot read a mode
 * 060 segment, so the group choice must not be an owner.
 */
export function readIdentity(seg: Perm, powers: Powers): Identity | { error: string } {
  if (powers.ipcOwner || !powers.canSwitch) return SELF
  const owners = [seg.uid, seg.cuid]
  if (seg.mode & 0o400) return { uid: seg.uid, gid: seg.gid }
  if (seg.mode & 0o040) return { uid: unrelated(owners), gid: seg.gid }
  if (seg.mode & 0o004) return { uid: unrelated(owners), gid: unrelated([seg.gid, seg.cgid]) }
  return {
    error: `mode ${seg.mode.toString(8).padStart(4, '0')} lets no identity read it and this process lacks CAP_IPC_OWNER (run shmkeep with --cap-add IPC_OWNER, or have the app use a readable mode)`,
  }
}

/**
 * The identity that creates a restored segment: its original creator, so that
 * cuid/cgid come back. Needs CAP_SETUID/CAP_SETGID unless we are that user.
 */
export function creatorIdentity(seg: Perm, powers: Powers): Identity {
  if (!powers.canSwitch || (powers.euid === seg.cuid && seg.cgid === (process.getegid?.() ?? -1))) return SELF
  return { uid: seg.cuid, gid: seg.cgid }
}
