/**
 * SysV segments seen as IPC objects, for listing and filtering over every
 * kind. Their contents are not read here: a segment can be gigabytes, and
 * src/snapshot.ts / src/restore.ts stream it in checksummed chunks to a file
 * of its own.
 */
import * as shm from '../shm'
import type { IpcObject } from './kind'

export interface LiveShm extends IpcObject {
  kind: 'shm'
  size: number
  nattch: number
}

export function listShm(): { objects: LiveShm[]; complete: boolean } {
  const scan = shm.scan()
  return {
    objects: scan.segments
      .filter((s) => !s.dest)
      .map((s) => ({ kind: 'shm', key: s.key, id: s.id, mode: s.mode, uid: s.uid, gid: s.gid, cuid: s.cuid, cgid: s.cgid, ctime: s.ctime, bytes: s.size, size: s.size, nattch: s.nattch })),
    complete: scan.complete,
  }
}
