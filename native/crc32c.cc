// CRC-32C with the CPU's instruction when it has one (x86-64 SSE4.2, arm64
// CRC extension), else slicing-by-8 tables. Chosen once, when the addon is
// loaded. The instruction paths run three independent streams over adjacent
// blocks (the instruction's latency is ~3 cycles, its throughput 1 per cycle)
// and join them with a shift operator: appending n zero bytes to a CRC
// register multiplies it by x^(8n) modulo the polynomial, which is linear, so
// for a register value it is four table lookups.
#include "crc32c.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

namespace shmkeep {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // 0x1EDC6F41 bit-reversed

// ---- GF(2) arithmetic modulo the polynomial, reflected: bit 31 is x^0. ----

constexpr uint32_t MultModP(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

// x^(2^k) mod P for k < 72 (enough for any 64-bit byte count times 8).
struct PowerTable {
  uint32_t x2n[72];
};

constexpr PowerTable MakePowers() {
  PowerTable t{};
  uint32_t p = 1u << 30;  // x^1
  for (int k = 0; k < 72; k++) {
    t.x2n[k] = p;
    p = MultModP(p, p);
  }
  return t;
}

constexpr PowerTable kPowers = MakePowers();

// x^(8n) mod P: the operator "append n zero bytes" on a raw register.
constexpr uint32_t X8nModP(uint64_t n) {
  uint32_t p = 1u << 31;  // x^0
  for (int k = 3; n; n >>= 1, k++) {
    if (n & 1) p = MultModP(kPowers.x2n[k], p);
  }
  return p;
}

// ---- Tables ----

struct SliceTables {
  uint32_t t[8][256];  // t[s][b]: byte b followed by s zero bytes
};

constexpr SliceTables MakeSlices() {
  SliceTables tb{};
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ kPoly : c >> 1;
    tb.t[0][b] = c;
  }
  for (int s = 1; s < 8; s++) {
    for (uint32_t b = 0; b < 256; b++) tb.t[s][b] = (tb.t[s - 1][b] >> 8) ^ tb.t[0][tb.t[s - 1][b] & 0xff];
  }
  return tb;
}

constexpr SliceTables kSlices = MakeSlices();

// Register shifted by a fixed number of zero bytes, one table per register byte.
struct ShiftTable {
  uint32_t t[4][256];
};

constexpr ShiftTable MakeShift(uint64_t bytes) {
  ShiftTable s{};
  uint32_t op = X8nModP(bytes);
  for (int k = 0; k < 4; k++) {
    for (uint32_t b = 0; b < 256; b++) s.t[k][b] = MultModP(op, b << (8 * k));
  }
  return s;
}

inline uint32_t Shift(const ShiftTable& s, uint32_t c) {
  return s.t[0][c & 0xff] ^ s.t[1][(c >> 8) & 0xff] ^ s.t[2][(c >> 16) & 0xff] ^ s.t[3][c >> 24];
}

inline uint64_t Load64(const uint8_t* p) {
  uint64_t w;
  memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  w = __builtin_bswap64(w);
#endif
  return w;
}

inline bool Unaligned(const uint8_t* p) { return (reinterpret_cast<uintptr_t>(p) & 7) != 0; }

// Raw register in, raw register out (no pre/post inversion) in every path.
uint32_t RawTable(uint32_t c, const uint8_t* p, size_t n) {
  const auto& t = kSlices.t;
  for (; n && Unaligned(p); n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w = Load64(p) ^ c;
    c = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
        t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
  }
  for (; n; n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__) || defined(__aarch64__)

// Block sizes of the three streams; the short one handles what is left of a
// buffer under 3 long blocks.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;
constexpr ShiftTable kShiftLong = MakeShift(kLong);
constexpr ShiftTable kShiftShort = MakeShift(kShort);

#endif

#if defined(__x86_64__)

#define SHMKEEP_CRC_STREAMS(BLOCK, SHIFT)                               \
  for (; n >= 3 * (BLOCK); n -= 3 * (BLOCK)) {                          \
    uint64_t c1 = 0, c2 = 0;                                            \
    const uint8_t* end = p + (BLOCK);                                   \
    do {                                                                \
      c0 = _mm_crc32_u64(c0, Load64(p));                                \
      c1 = _mm_crc32_u64(c1, Load64(p + (BLOCK)));                      \
      c2 = _mm_crc32_u64(c2, Load64(p + 2 * (BLOCK)));                  \
      p += 8;                                                           \
    } while (p < end);                                                  \
    c0 = Shift(SHIFT, Shift(SHIFT, static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1)) ^ \
         static_cast<uint32_t>(c2);                                     \
    p += 2 * (BLOCK);                                                   \
  }

__attribute__((target("sse4.2"))) uint32_t RawSse42(uint32_t c, const uint8_t* p, size_t n) {
  for (; n && Unaligned(p); n--) c = _mm_crc32_u8(c, *p++);
  uint64_t c0 = c;
  SHMKEEP_CRC_STREAMS(kLong, kShiftLong)
  SHMKEEP_CRC_STREAMS(kShort, kShiftShort)
  for (; n >= 8; n -= 8, p += 8) c0 = _mm_crc32_u64(c0, Load64(p));
  c = static_cast<uint32_t>(c0);
  for (; n; n--) c = _mm_crc32_u8(c, *p++);
  return c;
}

#undef SHMKEEP_CRC_STREAMS

#elif defined(__aarch64__)

#define SHMKEEP_CRC_STREAMS(BLOCK, SHIFT)                        \
  for (; n >= 3 * (BLOCK); n -= 3 * (BLOCK)) {                   \
    uint32_t c1 = 0, c2 = 0;                                     \
    const uint8_t* end = p + (BLOCK);                            \
    do {                                                         \
      c = __crc32cd(c, Load64(p));                               \
      c1 = __crc32cd(c1, Load64(p + (BLOCK)));                   \
      c2 = __crc32cd(c2, Load64(p + 2 * (BLOCK)));               \
      p += 8;                                                    \
    } while (p < end);                                           \
    c = Shift(SHIFT, Shift(SHIFT, c) ^ c1) ^ c2;                 \
    p += 2 * (BLOCK);                                            \
  }

__attribute__((target("+crc"))) uint32_t RawArmCrc(uint32_t c, const uint8_t* p, size_t n) {
  for (; n && Unaligned(p); n--) c = __crc32cb(c, *p++);
  SHMKEEP_CRC_STREAMS(kLong, kShiftLong)
  SHMKEEP_CRC_STREAMS(kShort, kShiftShort)
  for (; n >= 8; n -= 8, p += 8) c = __crc32cd(c, Load64(p));
  for (; n; n--) c = __crc32cb(c, *p++);
  return c;
}

#undef SHMKEEP_CRC_STREAMS

#endif

struct Impl {
  uint32_t (*raw)(uint32_t, const uint8_t*, size_t);
  const char* name;
};

Impl Choose() {
  const char* force = getenv("SHMKEEP_CRC32C");
  if (force == nullptr || strcmp(force, "table") != 0) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) return {RawSse42, "sse4.2"};
#elif defined(__aarch64__)
    if (getauxval(AT_HWCAP) & HWCAP_CRC32) return {RawArmCrc, "armv8-crc"};
#endif
  }
  return {RawTable, "table"};
}

// Chosen while the addon is loaded (on the thread that loads it), so the
// environment is read before any worker thread runs.
const Impl kImpl = Choose();

}  // namespace

uint32_t Crc32c(uint32_t crc, const void* data, size_t n) {
  return ~kImpl.raw(~crc, static_cast<const uint8_t*>(data), n);
}

uint32_t Crc32cZeros(uint32_t crc, uint64_t n) { return ~MultModP(X8nModP(n), ~crc); }

const char* Crc32cImpl() { return kImpl.name; }

}  // namespace shmkeep
