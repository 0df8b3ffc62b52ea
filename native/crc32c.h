// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
// snapshot's chunk table. Append semantics: Crc32c(0, ...) starts a checksum,
// Crc32c(Crc32c(0, a), b) == Crc32c(0, a + b).
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmkeep {

uint32_t Crc32c(uint32_t crc, const void* data, size_t n);

// Crc32c(crc, <n zero bytes>) in O(log n), without touching n bytes.
uint32_t Crc32cZeros(uint32_t crc, uint64_t n);

// The implementation chosen when the addon was loaded: "sse4.2", "armv8-crc"
// or "table". SHMKEEP_CRC32C=table in the environment forces "table".
const char* Crc32cImpl();

}  // namespace shmkeep
