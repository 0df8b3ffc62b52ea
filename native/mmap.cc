// File mapping (what mmap-io offered, on current Node): mmap MAP_SHARED,
// msync, madvise, munmap. Extending a file uses posix_fallocate so that a full
// disk is ENOSPC now rather than SIGBUS on first touch.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "common.h"
#include "region.h"

namespace shmkeep {
namespace {

struct Fd {
  int fd;
  ~Fd() { if (fd >= 0) close(fd); }
};

// mmapMap(path, offset, length|-1, write, create, mode, maxLength) -> {buffer, handle, fileSize}
Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  int64_t offset = I64(info[1]);
  int64_t length = I64(info[2]);
  bool write = Bool(info[3]);
  bool create = Bool(info[4]);
  mode_t mode = static_cast<mode_t>(I32(info[5]));
  int flags = (write ? O_RDWR : O_RDONLY) | O_CLOEXEC | (create ? O_CREAT : 0);
  Fd file{open(path.c_str(), flags, mode)};
  if (file.fd < 0) ThrowErrno(env, "open", errno);
  struct stat st;
  if (fstat(file.fd, &st) != 0) ThrowErrno(env, "fstat", errno);
  if (!S_ISREG(st.st_mode)) ThrowErrno(env, "mmap", S_ISDIR(st.st_mode) ? EISDIR : ENODEV);
  if (length < 0) length = st.st_size - offset;
  if (length <= 0) throw Napi::RangeError::New(env, "nothing to map: the file has " + std::to_string(st.st_size) +
                                                        " bytes and the offset is " + std::to_string(offset));
  int64_t end = offset + length;
  if (end > st.st_size) {
    if (!create) {
      throw Napi::RangeError::New(env, "offset + length (" + std::to_string(end) + ") is beyond the end of the file (" +
                                           std::to_string(st.st_size) + " bytes); pass create: true to extend it");
    }
    int err = posix_fallocate(file.fd, st.st_size, end - st.st_size);
    if (err) ThrowErrno(env, "fallocate", err);
  }
  // mmap wants a page-aligned offset; map from the page boundary and hand out
  // the Buffer from the requested byte.
  int64_t page = sysconf(_SC_PAGESIZE);
  int64_t aligned = offset - offset % page;
  size_t mapLength = static_cast<size_t>(end - aligned);
  void* base = mmap(nullptr, mapLength, PROT_READ | (write ? PROT_WRITE : 0), MAP_SHARED, file.fd, aligned);
  if (base == MAP_FAILED) ThrowErrno(env, "mmap", errno);
  auto region = std::make_shared<Region>(Region::Kind::kFile, base, mapLength);
  Napi::Object out = WrapRegion(env, region, static_cast<size_t>(offset - aligned), static_cast<size_t>(length), info[6].As<Napi::Number>().DoubleValue());
  out.Set("fileSize", Napi::Number::New(env, static_cast<double>(end > st.st_size ? end : st.st_size)));
  return out;
}

// Run fn(base, length) on a mapped region, or EBADF when it was unmapped.
template <typename Fn>
void WithMapped(Napi::Env env, const Napi::Value& handle, const char* syscall, Fn fn) {
  RegionRef region = RegionFromHandle(handle);
  std::lock_guard<std::mutex> lock(region->mu);
  if (region->state != Region::State::kMapped) ThrowErrno(env, syscall, EBADF);
  if (fn(region->base, region->mapLength) != 0) ThrowErrno(env, syscall, errno);
}

// mmapSync(handle, async)
Napi::Value Sync(const Napi::CallbackInfo& info) {
  int flags = Bool(info[1]) ? MS_ASYNC : MS_SYNC;
  WithMapped(info.Env(), info[0], "msync", [flags](void* base, size_t len) { return msync(base, len, flags); });
  return info.Env().Undefined();
}

// mmapAdvise(handle, advice)
Napi::Value Advise(const Napi::CallbackInfo& info) {
  int advice = I32(info[1]);
  WithMapped(info.Env(), info[0], "madvise", [advice](void* base, size_t len) { return madvise(base, len, advice); });
  return info.Env().Undefined();
}

// mmapUnmap(handle, buffer) -> whether this call unmapped it (false: it already was).
Napi::Value Unmap(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), ReleaseRegion(info.Env(), info[0], info[1], "munmap"));
}

}  // namespace

void InitMmap(Napi::Env env, Napi::Object exports) {
  exports.Set("mmapMap", Napi::Function::New(env, Map, "mmapMap"));
  exports.Set("mmapSync", Napi::Function::New(env, Sync, "mmapSync"));
  exports.Set("mmapAdvise", Napi::Function::New(env, Advise, "mmapAdvise"));
  exports.Set("mmapUnmap", Napi::Function::New(env, Unmap, "mmapUnmap"));
  Napi::Object advice = Napi::Object::New(env);
  advice.Set("normal", MADV_NORMAL);
  advice.Set("random", MADV_RANDOM);
  advice.Set("sequential", MADV_SEQUENTIAL);
  advice.Set("willneed", MADV_WILLNEED);
  advice.Set("dontneed", MADV_DONTNEED);
#ifdef MADV_HUGEPAGE
  advice.Set("hugepage", MADV_HUGEPAGE);
  advice.Set("nohugepage", MADV_NOHUGEPAGE);
#endif
  advice.Set("dontfork", MADV_DONTFORK);
  advice.Set("dofork", MADV_DOFORK);
#ifdef MADV_DONTDUMP
  advice.Set("dontdump", MADV_DONTDUMP);
  advice.Set("dodump", MADV_DODUMP);
#endif
  advice.Set("populate_read", 22);   // MADV_POPULATE_READ, Linux >= 5.14
  advice.Set("populate_write", 23);  // MADV_POPULATE_WRITE, Linux >= 5.14
  exports.Set("madvice", advice);
}

}  // namespace shmkeep
