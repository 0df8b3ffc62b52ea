// The chunk table and the per-chunk digests.
//
// Chunk table: 8 bytes per chunk: u32 LE CRC-32C of the chunk's bytes, u8 type
// (0 = ZERO: all bytes zero, a hole in the data file; 1 = DATA), 3 zero bytes.
// Chunk i covers [i * chunkSize, min(size, (i + 1) * chunkSize)).
// Hashes: 16 bytes per chunk, XXH3-128 (low 64 bits then high, LE), zeros
// for ZERO chunks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "crc32c.h"
#include "fileio.h"

// XXH3-128 (BSD-2-Clause, vendored from xxHash 0.8.1): the 128-bit hash that
// decides "unchanged since the previous generation". CRC-32C alone would carry
// stale data over once in 2^32 changed chunks; it stays for corruption.
#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

namespace shmkeep {

constexpr size_t kEntry = 8;
constexpr size_t kHash = 16;
constexpr uint8_t kZero = 0;
constexpr uint8_t kData = 1;

inline uint64_t ChunkCount(uint64_t size, uint64_t chunkSize) { return size / chunkSize + (size % chunkSize != 0); }

// Bytes of chunk i (the last may be shorter).
inline size_t ChunkLength(uint64_t i, uint64_t size, uint64_t chunkSize) {
  return static_cast<size_t>(std::min(chunkSize, size - i * chunkSize));
}

// ReadStoredChunk's fn when only the CRC counts.
struct AcceptAll {
  bool operator()(const uint8_t*, size_t, uint64_t) const { return true; }
};

inline void PutEntry(uint8_t* e, uint32_t crc, uint8_t type) {
  e[0] = static_cast<uint8_t>(crc);
  e[1] = static_cast<uint8_t>(crc >> 8);
  e[2] = static_cast<uint8_t>(crc >> 16);
  e[3] = static_cast<uint8_t>(crc >> 24);
  e[4] = type;
  e[5] = e[6] = e[7] = 0;
}

inline uint32_t EntryCrc(const uint8_t* e) {
  return static_cast<uint32_t>(e[0]) | static_cast<uint32_t>(e[1]) << 8 | static_cast<uint32_t>(e[2]) << 16 |
         static_cast<uint32_t>(e[3]) << 24;
}

inline void PutHash(uint8_t* out, XXH128_hash_t h) {
  for (int b = 0; b < 8; b++) out[b] = static_cast<uint8_t>(h.low64 >> (8 * b));
  for (int b = 0; b < 8; b++) out[8 + b] = static_cast<uint8_t>(h.high64 >> (8 * b));
}

// All bytes zero?
bool IsZero(const uint8_t* p, size_t n);

// The digest of one chunk, fed in order: its data pieces (bytes of ours,
// never live memory) and its gaps (zeros that were not read). XXH3-128 and
// CRC-32C over the same bytes, and whether all of them are zero.
class ChunkDigest {
 public:
  explicit ChunkDigest(bool withCrc = true) : withCrc_(withCrc) { XXH3_128bits_reset(&state_); }
  void Data(const uint8_t* p, size_t n);
  void Zeros(uint64_t n);
  XXH128_hash_t Hash() const { return XXH3_128bits_digest(&state_); }
  bool SameHash(const uint8_t* prev) const;
  uint32_t crc() const { return crc_; }
  bool zero() const { return zero_; }

 private:
  XXH3_state_t state_;
  const bool withCrc_;
  uint32_t crc_ = 0;
  bool zero_ = true;
};

// CRC-32C of a chunk of len bytes whose data runs are at their offsets in
// buf and whose other bytes are zeros (not read).
inline uint32_t RunsCrc(const uint8_t* buf, const std::vector<Run>& runs, size_t len) {
  uint32_t c = 0;
  size_t pos = 0;
  for (const Run& r : runs) {
    c = Crc32c(Crc32cZeros(c, r.start - pos), buf + r.start, r.len);
    pos = r.start + r.len;
  }
  return Crc32cZeros(c, len - pos);
}

// Reads chunk [off, off + len) of a stored data file: its data runs (holes
// are zeros, not read) in pieces of at most `piece` bytes, each into
// dest(fileOffset, n) and handed to fn(p, n, fileOffset) at once, while it is
// cache-hot. The CRC covers data and holes. Returns 1 when the whole chunk
// was read, fn accepted every piece and the CRC is `crc`; 0 when not (short
// file, refused, other CRC); -errno for a read error; kDestFailed when dest
// returned nullptr (the caller knows why).
// The one "data runs + CRC of the gaps" loop of restore, verify and copyCarried.
constexpr int kDestFailed = -100000;
template <typename Dest, typename Fn>
int ReadStoredChunk(int fd, uint64_t off, size_t len, size_t piece, uint32_t crc, Dest dest, Fn fn, uint64_t& bytesRead) {
  uint32_t c = 0;
  uint64_t pos = off;
  for (const Run& run : FileDataRuns(fd, off, len)) {
    c = Crc32cZeros(c, off + run.start - pos);
    for (uint64_t at = off + run.start, end = at + run.len; at < end;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(piece, end - at));
      uint8_t* p = dest(at, want);
      if (!p) return kDestFailed;
      int64_t got = ReadFull(fd, p, want, at);
      if (got < 0) return static_cast<int>(got);
      bytesRead += static_cast<uint64_t>(got);
      c = Crc32c(c, p, static_cast<size_t>(got));
      if (static_cast<size_t>(got) != want || !fn(p, want, at)) return 0;
      at += want;
    }
    pos = off + run.start + run.len;
  }
  c = Crc32cZeros(c, off + len - pos);
  return c == crc ? 1 : 0;
}

}  // namespace shmkeep
