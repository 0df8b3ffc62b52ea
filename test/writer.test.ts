/**
 * Checksum what you write: a writer keeps bumping per-page counters of a
 * 64 MiB segment while `shmkeep snapshot` runs five times; every generation
 * verifies and restores to values the writer stored during its snapshot
 * (test/slow/writer-loop.ts; 30 snapshots in test/slow/writer.test.ts).
 */
import { test } from 'vitest'
import { writerLoop } from './slow/writer-loop'

test('snapshots of a segment written all the time verify and restore to values written meanwhile', async () => {
  await writerLoop('0x57a1e005', 64 << 20, 5)
}, 240_000)
