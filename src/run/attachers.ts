/**
 * Who is attached to which segment: every process's /proc/<pid>/maps shows a
 * SysV attachment as `/SYSV<key as %08x> (deleted)`, with the segment id as
 * the inode number — which tells apart IPC_PRIVATE segments (all key 0).
 */
import fs from 'node:fs'
import { allPids, commandLine } from './proc'

export interface Attacher {
  pid: number
  command: string
}

/** Attachers by segment id, leaving out the pids in `exclude`. */
export function attachersById(exclude: Set<number> = new Set([process.pid])): Map<number, Attacher[]> {
  const out = new Map<number, Attacher[]>()
  for (const pid of allPids()) {
    if (exclude.has(pid)) continue
    let maps: string
    try {
      maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8')
    } catch {
      continue // gone, or not ours to read
    }
    const ids = new Set<number>()
    for (const line of maps.split('\n')) {
      if (!line.includes('/SYSV')) continue
      const inode = Number(line.split(/\s+/)[4])
      if (Number.isInteger(inode)) ids.add(inode)
    }
    if (!ids.size) continue
    const command = commandLine(pid) ?? ''
    for (const id of ids) {
      const list = out.get(id) ?? []
      list.push({ pid, command })
      out.set(id, list)
    }
  }
  return out
}
