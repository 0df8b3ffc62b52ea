#include "region.h"

#include <sys/mman.h>
#include <sys/shm.h>

#include "common.h"

namespace shmkeep {

int Region::UnmapLocked() {
  if (state == State::kUnmapped) return 0;
  int rc = kind == Kind::kShm ? shmdt(base) : munmap(base, mapLength);
  state = State::kUnmapped;
  return rc == 0 ? 0 : errno;
}

namespace {

void FinalizeBuffer(Napi::Env, void*, RegionRef* hint) {
  RegionRef region = *hint;
  delete hint;
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
  // Check the engine's limit first: when napi_create_external_buffer fails,
  // Node has already run (or queued) the finalizer, so the failure path below
  // must not free anything itself.
  if (static_cast<double>(length) > maxLength) {
    {
      std::lock_guard<std::mutex> lock(region->mu);
      region->UnmapLocked();
    }
    throw Napi::RangeError::New(env, "a Buffer of " + std::to_string(length) + " bytes is above the largest Node can make (" +
                                         std::to_string(static_cast<uint64_t>(maxLength)) + "); map a smaller window (offset, length)");
  }
  auto* bufferRef = new RegionRef(region);
  napi_value buffer;
  napi_status status = napi_create_external_buffer(
      env, length, static_cast<char*>(region->base) + offset,
      [](napi_env e, void* data, void* hint) { FinalizeBuffer(Napi::Env(e), data, static_cast<RegionRef*>(hint)); },
      bufferRef, &buffer);
  if (status != napi_ok) {
    // The finalizer owns bufferRef now and unmaps the region when it runs.
    if (env.IsExceptionPending()) env.GetAndClearPendingException();
    throw Napi::RangeError::New(env, "cannot make a Buffer of " + std::to_string(length) + " bytes over the mapping");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("buffer", Napi::Value(env, buffer));
  out.Set("handle", Napi::External<RegionRef>::New(env, new RegionRef(region), FinalizeHandle));
  return out;
}

RegionRef RegionFromHandle(const Napi::Value& handle) {
  if (!handle.IsExternal()) throw Napi::TypeError::New(handle.Env(), "not a mapping handle");
  return *handle.As<Napi::External<RegionRef>>().Data();
}

void ReleaseRegion(Napi::Env env, const Napi::Value& handle, const Napi::Value& buffer, const char* syscall) {
  RegionRef region = RegionFromHandle(handle);
  int err;
  {
    std::lock_guard<std::mutex> lock(region->mu);
    if (region->state == Region::State::kUnmapped) return;
    if (region->busy > 0) ThrowErrno(env, syscall, EBUSY);
    err = region->UnmapLocked();
  }
  // Neuter first-hand even if the unmap reported an error: the memory is no
  // longer ours to promise.
  napi_value arrayBuffer;
  bool isTyped = false;
  napi_is_typedarray(env, buffer, &isTyped);
  if (isTyped) {
    napi_get_typedarray_info(env, buffer, nullptr, nullptr, nullptr, &arrayBuffer, nullptr);
    NAPI_THROW_IF_FAILED_VOID(env, napi_detach_arraybuffer(env, arrayBuffer));
  }
  if (err) ThrowErrno(env, syscall, err);
}

}  // namespace shmkeep
