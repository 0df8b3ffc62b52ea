/**
 * Checksum what you write, at length: 30 snapshots of a 64 MiB segment that a
 * writer changes all the time (see writer-loop.ts).
 */
import { test } from 'vitest'
import { writerLoop } from './writer-loop'

test('30 snapshots of a segment written all the time: every one verifies and restores to values written meanwhile', async () => {
  await writerLoop('0x57a1e030', 64 << 20, 30)
})
