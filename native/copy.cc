// The copy path's exports: save.cc, restore.cc and verify.cc do the work;
// here are the small ones (CRC-32C of a buffer, of a mapping;
// whether map_files opens). Files:
//   fileio.*     descriptors, full reads/writes, data runs, direct I/O, FileWriter
//   residency.*  mincore, populate/drop, map_files, SegmentReader
//   chunks.*     the chunk table, ChunkDigest, ReadStoredChunk
//   job.*        the async worker base, job tokens (cancel, bytes done), argument checks
#include <memory>

#include "common.h"
#include "copy.h"
#include "crc32c.h"
#include "job.h"
#include "region.h"
#include "residency.h"

namespace shmkeep {
namespace {

// crc32c(buf, seed = 0) -> number, on the JS thread: for small metadata.
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "crc32c expects a Uint8Array");
  Napi::TypedArray t = info[0].As<Napi::TypedArray>();
  uint32_t seed = info.Length() > 1 && !info[1].IsUndefined() ? U32(info[1]) : 0;
  size_t n = t.ByteLength();
  const uint8_t* data = n ? static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset() : nullptr;
  return Napi::Number::New(env, Crc32c(seed, data, n));
}

Napi::Value Crc32cImplJs(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Crc32cImpl()); }

Napi::Value MapFilesOpensJs(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), MapFilesOpens()); }

// checksumMapping(handle, buffer) -> crc: CRC-32C of a Buffer made by
// shm.attach or mmap.map, off the JS thread. The mapping is marked in use
// (busy) meanwhile: a detach then throws EBUSY, and a Buffer collected
// meanwhile is unmapped by the last user, never under the worker's feet.

class ChecksumMappingWorker : public Job {
 public:
  ChecksumMappingWorker(Napi::Env env, RegionRef region, const uint8_t* data, size_t length)
      : Job(env, "shmkeep.checksumMapping"), region_(std::move(region)), data_(data), length_(length) {}

  ~ChecksumMappingWorker() override {
    std::lock_guard<std::mutex> lock(region_->mu);
    if (--region_->busy == 0 && region_->releaseWhenIdle) region_->UnmapLocked();
  }

  void Execute() override { crc_ = Crc32c(0, data_, length_); }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, crc_); }

 private:
  RegionRef region_;
  const uint8_t* data_;
  size_t length_;
  uint32_t crc_ = 0;
};

Napi::Value ChecksumMapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionRef region = RegionFromHandle(info[0]);
  Napi::Buffer<uint8_t> buffer = info[1].As<Napi::Buffer<uint8_t>>();
  {
    std::lock_guard<std::mutex> lock(region->mu);
    if (region->state != Region::State::kMapped) return Rejected(env, ErrnoError(env, "checksum", EBADF));
    region->busy++;
  }
  auto* w = new ChecksumMappingWorker(env, region, buffer.Data(), buffer.Length());
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

}  // namespace

void InitCopy(Napi::Env env, Napi::Object exports) {
  exports.Set("checksumMapping", Napi::Function::New(env, ChecksumMapping, "checksumMapping"));
  exports.Set("copyCarried", Napi::Function::New(env, CopyCarried, "copyCarried"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
  exports.Set("crc32cImpl", Napi::Function::New(env, Crc32cImplJs, "crc32cImpl"));
  exports.Set("mapFilesOpens", Napi::Function::New(env, MapFilesOpensJs, "mapFilesOpens"));
  exports.Set("saveSegment", Napi::Function::New(env, SaveSegment, "saveSegment"));
  exports.Set("savePacked", Napi::Function::New(env, SavePacked, "savePacked"));
  exports.Set("restoreSegment", Napi::Function::New(env, RestoreSegment, "restoreSegment"));
  exports.Set("verifyFile", Napi::Function::New(env, VerifyFile, "verifyFile"));
}

}  // namespace shmkeep
