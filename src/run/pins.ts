/**
 * Pins: where kernel.shm_rmid_forced is 1, the kernel destroys a segment as
 * soon as its last process detaches or its creator exits. `shmkeep run` then
 * keeps one read-only attachment of its own on every segment, from restore
 * (or from the moment it sees the app's new segment) to the final snapshot.
 * Pinning raises each segment's attach count by one. The pin's pages are
 * never touched: copies use their own short-lived attachments.
 */
import { currentPowers, readIdentity } from '../identity'
import { formatKey } from '../keys'
import type { Logger } from '../log'
import * as shm from '../shm'
import { shmRmidForced } from '../system'

export class Pins {
  private readonly pinned = new Map<number, Buffer>()

  constructor(private readonly log: Logger) {}

  /** Ids we hold an attachment on. */
  get ids(): Set<number> {
    return new Set(this.pinned.keys())
  }

  /**
   * Re-read shm_rmid_forced; while it is 1, attach every segment not yet
   * pinned. Returns whether pinning is in force.
   */
  scan(): boolean {
    if (!shmRmidForced()) return false
    const powers = currentPowers()
    for (const s of shm.list()) {
      if (s.dest || this.pinned.has(s.id)) continue
      const who = readIdentity(s, powers)
      if ('error' in who) {
        this.log.log('warn', 'pin.failed', `cannot pin segment ${formatKey(s.key)} (id ${s.id}): ${who.error}`)
        continue
      }
      try {
        // A one-byte window: a Buffer over one page we never read.
        this.pinned.set(s.id, shm.attach(s.id, { readonly: true, length: Math.min(1, s.size), uid: who.uid, gid: who.gid }))
        this.log.log('debug', 'pin', `pinned segment ${formatKey(s.key)} (id ${s.id}) (kernel.shm_rmid_forced=1)`)
      } catch (e) {
        this.log.log('warn', 'pin.failed', `cannot pin segment ${formatKey(s.key)} (id ${s.id}): ${(e as Error).message}`)
      }
    }
    return true
  }

  /** Drop every pin (after the final snapshot). */
  release(): void {
    for (const buf of this.pinned.values()) {
      try {
        shm.detach(buf)
      } catch {
        // already gone
      }
    }
    this.pinned.clear()
  }
}
