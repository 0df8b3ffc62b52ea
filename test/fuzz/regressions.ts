/**
 * Mutations the fuzz once failed on (each a bug that was fixed), kept as
 * fixed cases: their operations are written out, so a change in the planner
 * cannot turn them into other mutations. Case 0 is the unmutated state dir.
 * Records are named by key (`key=0x…`), not by their place in a list.
 */
import type { Case } from './plan'

const G2 = 'gen-000000000002'
const GEN2 = `${G2}/GENERATION`
/** The 4 KiB segment (packed in GENERATION) and the 3 MiB one (its own .meta). */
const PACKED = ['segments', 'key=0x5a0f0002', 'packed']
const QUEUE = { gen: G2, kind: 'msg' as const, key: '0x5a0f0011', id: 0 }
const SMALL = { gen: G2, kind: 'shm' as const, key: '0x5a0f0002', id: 1 }

export const regressions: Case[] = [
  { id: 0, classes: ['none'], ops: [], effects: [] },
  // Seed 2, case 59: a packed segment's chunk typed 16 (unknown) came back as
  // zeros: packed records were not checked like a .meta (src/state/validate.ts).
  { id: 1, classes: ['forge-table'], ops: [{ op: 'forge', file: GEN2, path: [...PACKED, 'chunks'], table: { chunk: 0, byte: 4, value: 16 } }], effects: [] },
  // The same with the data chunk typed zero: its CRC is not the CRC of zero
  // bytes. (Case 3, its .meta counterpart, was refused already by the native
  // path; it stays as the same rule's other half.)
  { id: 2, classes: ['forge-table'], ops: [{ op: 'forge', file: GEN2, path: [...PACKED, 'chunks'], table: { chunk: 0, byte: 4, value: 0 } }], effects: [] },
  { id: 3, classes: ['forge-table'], ops: [{ op: 'forge', file: `${G2}/5a0f0003-2.meta`, path: ['chunks'], table: { chunk: 0, byte: 4, value: 0 } }], effects: [] },
  // A packed record's uid of -1 ("no change" to IPC_SET) was accepted.
  { id: 4, classes: ['forge-invalid'], ops: [{ op: 'forge', file: GEN2, path: [...PACKED, 'uid'], value: -1 }], effects: [{ ...SMALL, set: { uid: -1 } }] },
  // Seed 3, cases 160 and 210: a queue's cgid -1 and mode 2^40 were accepted
  // (kept as 0, and masked to 0): object records were not checked at all.
  { id: 5, classes: ['forge-invalid'], ops: [{ op: 'forge', file: GEN2, path: ['objects', 'records', 'key=0x5a0f0011', 'cgid'], value: -1 }], effects: [{ ...QUEUE, set: { cgid: -1 } }] },
  { id: 6, classes: ['forge-invalid'], ops: [{ op: 'forge', file: GEN2, path: ['objects', 'records', 'key=0x5a0f0011', 'mode'], value: 2 ** 40 }], effects: [{ ...QUEUE, set: { mode: 2 ** 40 } }] },
  // GENERATION's `unsaved` not a list: restore failed after every object was created (a TypeError, undone).
  { id: 7, classes: ['forge-invalid'], ops: [{ op: 'forge', file: GEN2, path: ['unsaved'], value: { key: 1 } }], effects: [] },
  { id: 8, classes: ['forge-invalid'], ops: [{ op: 'forge', file: GEN2, path: ['unsaved'], value: [null] }], effects: [] },
]
