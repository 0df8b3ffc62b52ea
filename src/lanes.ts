/**
 * How many threads share the chunks of one segment or one data file
 * (native/parallel.h): save, the compare pass of an unchanged segment,
 * restore and verify.
 *
 * One thread does not keep up with the disk: reading the attachment costs
 * page-table work (populate, drop) and every byte is copied, hashed
 * (XXH3-128) and checksummed (CRC-32C); a restore zeroes and fills new
 * pages and checksums them. Two lanes overlap one chunk's CPU work with the
 * other's I/O and use a second core — and a single large segment (1 or 4
 * GiB) is the common case, which segment-level parallelism (snapshot's
 * mapLimit) does not help.
 *
 * At most 2: each save lane holds two buffers of up to 4 MiB, and up to 4
 * segments are saved at once (64 MiB of buffers at most, within the 150 MiB
 * peak RSS target); past two lanes the disk, not the CPU, is the limit on
 * the machines measured (docs/BENCHMARKS.md).
 */
import os from 'node:os'

export const MAX_LANES = 2

/** Lanes for `size` bytes in chunks of `chunkSize`: never more than there are chunks or cores. */
export function lanesFor(size: number, chunkSize: number, cores: number = os.availableParallelism()): number {
  return Math.max(1, Math.min(MAX_LANES, cores, Math.ceil(size / chunkSize)))
}
