#include "region.h"

#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <algorithm>

#include "common.h"

namespace shmkeep {

namespace {

// V8 sees each mapping as its length, at least kMinExternalWeight, so that a
// loop that drops attachments makes it collect (and finalize) them long before
// vm.max_map_count (65530) or nattch run out: V8 collects about every 64 MiB
// of external memory, here every 1,000 mappings. And at most
// kMaxExternalWeight: the limits are mappings, not bytes (the pages belong to
// the segment or the file, not to this heap), and one 1 GiB attachment must
// not make every later allocation a reason to collect.
constexpr int64_t kMinExternalWeight = int64_t{64} << 10;
constexpr int64_t kMaxExternalWeight = int64_t{64} << 20;

}  // namespace

int Region::UnmapLocked() {
  int rc = 0;
  if (state == State::kMapped) rc = kind == Kind::kShm ? shmdt(base) : munmap(base, mapLength);
  else if (state == State::kPlaceholder) rc = munmap(base, mapLength);
  state = State::kUnmapped;
  return rc == 0 ? 0 : errno;
}

int Region::PlaceholderLocked() {
  if (state != State::kMapped) return 0;
  const int prot = PROT_READ | PROT_WRITE;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED;
  size_t length = mapLength;
  void* p = mmap(base, length, prot, flags, -1, 0);
  // A hugetlb attachment is the segment rounded up to its huge page size and
  // can only be replaced whole (a split inside it is EINVAL). Try each power
  // of two upwards: a rounding below the huge page size either splits
  // (EINVAL, nothing changed) or already ends where the attachment ends, so
  // the first success covers the attachment exactly, never a byte beyond.
  for (size_t align = 2 * static_cast<size_t>(sysconf(_SC_PAGESIZE)); p == MAP_FAILED && errno == EINVAL && align <= (size_t{1} << 30); align *= 2) {
    length = (mapLength + align - 1) & ~(align - 1);
    p = mmap(base, length, prot, flags, -1, 0);
  }
  if (p == MAP_FAILED) return errno;
  mapLength = length;
  state = State::kPlaceholder;
  return 0;
}

namespace {

struct Finalized {
  RegionRef region;
  int64_t weight;
};

// The ArrayBuffer object is gone: no Buffer or view over the memory is left.
void FinalizeArrayBuffer(napi_env env, void*, void* hint) {
  auto* f = static_cast<Finalized*>(hint);
  RegionRef region = std::move(f->region);
  int64_t ignored;
  napi_adjust_external_memory(env, -f->weight, &ignored);
  delete f;
  std::lock_guard<std::mutex> lock(region->mu);
  if (region->busy > 0) {
    region->releaseWhenIdle = true;  // the last async user unmaps it
    return;
  }
  region->UnmapLocked();
}

void FinalizeHandle(Napi::Env, RegionRef* ref) { delete ref; }

}  // namespace

Napi::Object WrapRegion(Napi::Env env, RegionRef region, size_t offset, size_t length, double maxLength) {
  auto fail = [&](const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(region->mu);
      region->UnmapLocked();
    }
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
    throw Napi::RangeError::New(env, message);
  };
  if (static_cast<double>(length) > maxLength) {
    fail("a Buffer of " + std::to_string(length) + " bytes is above the largest Node can make (" +
         std::to_string(static_cast<uint64_t>(maxLength)) + "); map a smaller window (offset, length)");
  }
  // No finalizer on the backing store: detaching the ArrayBuffer drops it at
  // once, while consumers may still hold the address. The ArrayBuffer
  // object's finalizer (below) is what ends the mapping.
  napi_value buffer, arrayBuffer;
  if (napi_create_external_buffer(env, length, static_cast<char*>(region->base) + offset, nullptr, nullptr, &buffer) != napi_ok ||
      napi_get_typedarray_info(env, buffer, nullptr, nullptr, nullptr, &arrayBuffer, nullptr) != napi_ok) {
    fail("cannot make a Buffer of " + std::to_string(length) + " bytes over the mapping");
  }
  int64_t weight = std::clamp<int64_t>(static_cast<int64_t>(region->mapLength), kMinExternalWeight, kMaxExternalWeight);
  auto* f = new Finalized{region, weight};
  if (napi_add_finalizer(env, arrayBuffer, nullptr, FinalizeArrayBuffer, f, nullptr) != napi_ok) {
    delete f;
    fail("cannot watch the Buffer over the mapping");
  }
  int64_t ignored;
  napi_adjust_external_memory(env, weight, &ignored);
  Napi::Object out = Napi::Object::New(env);
  out.Set("buffer", Napi::Value(env, buffer));
  out.Set("handle", Napi::External<RegionRef>::New(env, new RegionRef(region), FinalizeHandle));
  return out;
}

RegionRef RegionFromHandle(const Napi::Value& handle) {
  if (!handle.IsExternal()) throw Napi::TypeError::New(handle.Env(), "not a mapping handle");
  return *handle.As<Napi::External<RegionRef>>().Data();
}

bool ReleaseRegion(Napi::Env env, const Napi::Value& handle, const Napi::Value& buffer, const char* syscall) {
  RegionRef region = RegionFromHandle(handle);
  {
    std::lock_guard<std::mutex> lock(region->mu);
    if (region->state != Region::State::kMapped) return false;
    if (region->busy > 0) ThrowErrno(env, syscall, EBUSY);
    int err = region->PlaceholderLocked();
    if (err) ThrowErrno(env, "mmap", err);
  }
  // JavaScript now sees length 0; the placeholder keeps what consumers in
  // flight hold harmless.
  napi_value arrayBuffer;
  bool isTyped = false;
  napi_is_typedarray(env, buffer, &isTyped);
  if (isTyped) {
    napi_get_typedarray_info(env, buffer, nullptr, nullptr, nullptr, &arrayBuffer, nullptr);
    NAPI_THROW_IF_FAILED(env, napi_detach_arraybuffer(env, arrayBuffer), true);
  }
  return true;
}

}  // namespace shmkeep
