// A mapping that JavaScript sees as a Buffer: a SysV attachment (shmat) or a
// file mapping (mmap). The record, not the address, is what the Buffer's
// finalizer and the JS handle hold: after an unmap the kernel may hand the same
// address to a new mapping, and releasing "by address" would unmap the wrong one.
//
// Node's own asynchronous consumers (zlib, fs, sockets, crypto on libuv's
// thread pool) keep the raw address of a Buffer they were given, and may
// still use it after shm.detach / mmap.unmap returned. So a release never
// leaves the address unmapped while the Buffer can be reached: it replaces the
// mapping with an anonymous private placeholder of the same length (the SysV
// attachment or the file mapping is gone at once: nattch falls, the file sees
// no more writes), and the placeholder itself is unmapped only when the
// Buffer's ArrayBuffer object is garbage-collected. A late reader sees zeros,
// a late writer writes into private memory, and no later mapping can be put
// at that address meanwhile.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

namespace shmkeep {

struct Region {
  enum class Kind { kShm, kFile };
  // kMapped: the attachment or file mapping. kPlaceholder: released, an
  // anonymous mapping holds the address (shmdt on it would be EINVAL).
  // kUnmapped: nothing at the address any more.
  enum class State { kMapped, kPlaceholder, kUnmapped };

  Kind kind;
  void* base;          // what shmat/mmap returned
  size_t mapLength;    // bytes mapped at base (page-rounded; a hugetlb attachment's is found at release)
  State state = State::kMapped;
  int busy = 0;        // async operations using the memory right now
  bool releaseWhenIdle = false;  // the Buffer died while busy
  std::mutex mu;

  Region(Kind k, void* b, size_t len) : kind(k), base(b), mapLength(len) {}

  // Unmap for good (the attachment or mapping, or the placeholder). Caller
  // holds mu. Returns 0 or an errno.
  int UnmapLocked();

  // Replace the attachment or mapping by the placeholder. Caller holds mu.
  // Returns 0 or an errno (then nothing changed).
  int PlaceholderLocked();
};

using RegionRef = std::shared_ptr<Region>;

// Buffer over [base + offset, +length) whose ArrayBuffer's finalizer releases
// the region for good; maxLength is Node's Buffer limit
// (buffer.constants.MAX_LENGTH). The region is reported to V8 as external
// memory (its length, clamped to 64 KiB…64 MiB: mappings and nattch are
// the real limits, not bytes) until then. Returns {buffer, handle}; the handle
// (an External) is what unmap/detach/sync take. On failure the region is
// unmapped before throwing.
Napi::Object WrapRegion(Napi::Env env, RegionRef region, size_t offset, size_t length, double maxLength);

// The region behind a handle made by WrapRegion.
RegionRef RegionFromHandle(const Napi::Value& handle);

// Release a region (placeholder, see above) and detach (neuter) the
// ArrayBuffer of its Buffer, so that any later access from JavaScript sees
// length 0. EBUSY while an async operation uses it; ENOMEM when the
// placeholder cannot be mapped (then it stays attached). Releasing twice does
// nothing. Returns whether this call released it.
bool ReleaseRegion(Napi::Env env, const Napi::Value& handle, const Napi::Value& buffer, const char* syscall);

}  // namespace shmkeep
