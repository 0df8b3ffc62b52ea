// A mapping that JavaScript sees as a Buffer: a SysV attachment (shmat) or a
// file mapping (mmap). The record, not the address, is what the Buffer's
// finalizer and the JS handle hold: after an unmap the kernel may hand the same
// address to a new mapping, and releasing "by address" would unmap the wrong one.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

namespace shmkeep {

struct Region {
  enum class Kind { kShm, kFile };
  enum class State { kMapped, kUnmapped };

  Kind kind;
  void* base;          // what shmat/mmap returned
  size_t mapLength;    // what munmap needs (file mappings)
  State state = State::kMapped;
  int busy = 0;        // async operations using the memory right now
  bool releaseWhenIdle = false;  // the Buffer died while busy
  std::mutex mu;

  Region(Kind k, void* b, size_t len) : kind(k), base(b), mapLength(len) {}

  // Unmap now. Caller holds mu. Returns 0 or an errno.
  int UnmapLocked();
};

using RegionRef = std::shared_ptr<Region>;

// Buffer over [base + offset, +length) whose finalizer releases the region if it
// is still mapped; maxLength is Node's Buffer limit (buffer.constants.MAX_LENGTH).
// Returns {buffer, handle}; the handle (an External) is what
// unmap/detach/sync take. On failure the region is unmapped before throwing.
Napi::Object WrapRegion(Napi::Env env, RegionRef region, size_t offset, size_t length, double maxLength);

// The region behind a handle made by WrapRegion.
RegionRef RegionFromHandle(const Napi::Value& handle);

// Unmap a region and detach (neuter) the ArrayBuffer of its Buffer, so that
// any later access sees length 0 instead of unmapped memory. EBUSY while an
// async operation uses it.
void ReleaseRegion(Napi::Env env, const Napi::Value& handle, const Napi::Value& buffer, const char* syscall);

}  // namespace shmkeep
