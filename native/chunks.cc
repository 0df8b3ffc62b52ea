// The chunk table's digests (see chunks.h).
#include "chunks.h"

namespace shmkeep {

bool IsZero(const uint8_t* p, size_t n) {
  // Blocks of 256 bytes OR-ed together (the compiler vectorizes the inner
  // loop), so a non-zero byte is found within a block of where it is.
  for (; n >= 256; p += 256, n -= 256) {
    uint64_t acc = 0;
    for (size_t i = 0; i < 256; i += 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      acc |= w;
    }
    if (acc) return false;
  }
  for (; n; n--) {
    if (*p++) return false;
  }
  return true;
}

void ChunkDigest::Data(const uint8_t* p, size_t n) {
  XXH3_128bits_update(&state_, p, n);
  if (withCrc_) crc_ = Crc32c(crc_, p, n);
  if (zero_) zero_ = IsZero(p, n);
}

void ChunkDigest::Zeros(uint64_t n) {
  static const uint8_t zeros[16384] = {};
  if (withCrc_) crc_ = Crc32cZeros(crc_, n);
  for (uint64_t k; n > 0; n -= k) {
    k = std::min<uint64_t>(sizeof zeros, n);
    XXH3_128bits_update(&state_, zeros, static_cast<size_t>(k));
  }
}

bool ChunkDigest::SameHash(const uint8_t* prev) const {
  uint8_t h[kHash];
  PutHash(h, Hash());
  return memcmp(h, prev, kHash) == 0;
}

}  // namespace shmkeep
