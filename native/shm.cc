// System V shared memory: shmget, shmat/shmdt, shmctl (IPC_STAT, IPC_SET,
// IPC_RMID, IPC_INFO, SHM_INFO, SHM_STAT_ANY). Arguments arrive validated
// from src/shm.ts; errors go back as errno errors.
#include <sys/ipc.h>
#include <sys/shm.h>

#include "common.h"
#include "region.h"

#ifndef SHM_STAT_ANY
#define SHM_STAT_ANY 15  // Linux >= 4.17; older kernels answer EINVAL
#endif
#ifndef SHM_HUGE_SHIFT
#define SHM_HUGE_SHIFT 26
#endif

namespace shmkeep {

Napi::Object ShmStatObject(Napi::Env env, int id, const struct shmid_ds& ds) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", id);
  o.Set("key", Napi::Number::New(env, static_cast<uint32_t>(ds.shm_perm.__key)));
  o.Set("size", Napi::Number::New(env, static_cast<double>(ds.shm_segsz)));
  o.Set("mode", Napi::Number::New(env, ds.shm_perm.mode));
  o.Set("uid", Napi::Number::New(env, ds.shm_perm.uid));
  o.Set("gid", Napi::Number::New(env, ds.shm_perm.gid));
  o.Set("cuid", Napi::Number::New(env, ds.shm_perm.cuid));
  o.Set("cgid", Napi::Number::New(env, ds.shm_perm.cgid));
  o.Set("cpid", Napi::Number::New(env, ds.shm_cpid));
  o.Set("lpid", Napi::Number::New(env, ds.shm_lpid));
  o.Set("nattch", Napi::Number::New(env, static_cast<double>(ds.shm_nattch)));
  o.Set("atime", Napi::Number::New(env, static_cast<double>(ds.shm_atime)));
  o.Set("dtime", Napi::Number::New(env, static_cast<double>(ds.shm_dtime)));
  o.Set("ctime", Napi::Number::New(env, static_cast<double>(ds.shm_ctime)));
  return o;
}

namespace {

// shmGet(key, size, flags, uid, gid) -> id. uid/gid >= 0: create under that
// identity (thread only), so cuid/cgid come out as the original creator's.
Napi::Value Get(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  key_t key = static_cast<key_t>(U32(info[0]));
  size_t size = static_cast<size_t>(I64(info[1]));
  int flags = I32(info[2]);
  int id, err = 0;
  {
    ThreadIdentity as(I64(info[3]), I64(info[4]));
    if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error());
    id = shmget(key, size, flags);
    if (id < 0) err = errno;
  }
  if (id < 0) ThrowErrno(env, "shmget", err);
  return Napi::Number::New(env, id);
}

// shmAttach(id, readonly, offset, length|-1, uid, gid, maxLength) -> {buffer, handle, size}
Napi::Value Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  bool readonly = Bool(info[1]);
  int64_t offset = I64(info[2]);
  int64_t length = I64(info[3]);
  void* addr;
  int err = 0;
  const char* failed = "shmat";
  struct shmid_ds ds;
  {
    // IPC_STAT needs read permission as shmat does: both under the identity
    // (root without CAP_IPC_OWNER may not stat a 0600 segment as itself).
    ThreadIdentity as(I64(info[4]), I64(info[5]));
    if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error());
    addr = shmat(id, nullptr, readonly ? SHM_RDONLY : 0);
    if (addr == reinterpret_cast<void*>(-1)) {
      err = errno;
    } else if (shmctl(id, IPC_STAT, &ds) != 0) {
      // Attached but cannot stat: we cannot bound the window, so refuse rather than guess.
      err = errno;
      failed = "shmctl";
      shmdt(addr);
    }
  }
  if (err) ThrowErrno(env, failed, err);
  uint64_t size = ds.shm_segsz;
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  auto region = std::make_shared<Region>(Region::Kind::kShm, addr, static_cast<size_t>((size + page - 1) / page * page));
  if (length < 0) length = offset <= static_cast<int64_t>(size) ? static_cast<int64_t>(size) - offset : 0;
  if (offset < 0 || length < 0 || static_cast<uint64_t>(offset + length) > size) {
    std::lock_guard<std::mutex> lock(region->mu);
    region->UnmapLocked();
    throw Napi::RangeError::New(env, "window [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                         ") is outside the segment of " + std::to_string(size) + " bytes");
  }
  Napi::Object out = WrapRegion(env, region, static_cast<size_t>(offset), static_cast<size_t>(length), info[6].As<Napi::Number>().DoubleValue());
  out.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  return out;
}

// shmDetach(handle, buffer) -> whether this call detached it (false: it already was).
Napi::Value Detach(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), ReleaseRegion(info.Env(), info[0], info[1], "shmdt"));
}

Napi::Value Stat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  struct shmid_ds ds;
  if (shmctl(id, IPC_STAT, &ds) != 0) ThrowErrno(env, "shmctl", errno);
  return ShmStatObject(env, id, ds);
}

// Every segment of this IPC namespace. SHM_STAT_ANY sees segments whatever
// their mode. A kernel without it (< 4.17) answers EINVAL for every index, as
// it does for unused ones: when it found nothing although SHM_INFO counts
// segments, list again with SHM_STAT and report statAny=false, because
// segments we may not read are then missing.
int StatAll(Napi::Env env, Napi::Array segments, int maxIndex, int cmd) {
  uint32_t n = 0;
  for (int index = 0; index <= maxIndex; index++) {
    struct shmid_ds ds;
    int id = shmctl(index, cmd, &ds);
    if (id < 0) continue;  // unused index (EINVAL), or unreadable under SHM_STAT (EACCES)
    segments.Set(n++, ShmStatObject(env, id, ds));
  }
  return n;
}

Napi::Value List(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct shm_info si;
  int maxIndex = shmctl(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&si));
  if (maxIndex < 0) ThrowErrno(env, "shmctl", errno);
  Napi::Array segments = Napi::Array::New(env);
  bool statAny = true;
  if (StatAll(env, segments, maxIndex, SHM_STAT_ANY) == 0 && si.used_ids > 0) {
    statAny = false;
    StatAll(env, segments, maxIndex, SHM_STAT);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("segments", segments);
  out.Set("statAny", Napi::Boolean::New(env, statAny));
  out.Set("usedIds", Napi::Number::New(env, si.used_ids));
  return out;
}

// shmSet(id, uid|-1, gid|-1, mode|-1, asUid, asGid): IPC_SET of the fields
// given. IPC_SET is allowed to the owner, the creator or CAP_SYS_ADMIN; root
// in a container has no CAP_SYS_ADMIN, so it acts as the creator (asUid/asGid).
Napi::Value Set(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  int64_t uid = I64(info[1]), gid = I64(info[2]), mode = I64(info[3]);
  const char* failed = nullptr;
  int err = 0;
  {
    ThreadIdentity as(I64(info[4]), I64(info[5]));
    if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error());
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0) {
      failed = "shmctl";
      err = errno;
    } else {
      if (uid >= 0) ds.shm_perm.uid = static_cast<uid_t>(uid);
      if (gid >= 0) ds.shm_perm.gid = static_cast<gid_t>(gid);
      if (mode >= 0) ds.shm_perm.mode = static_cast<unsigned short>(mode);
      if (shmctl(id, IPC_SET, &ds) != 0) { failed = "shmctl"; err = errno; }
    }
  }
  if (failed) ThrowErrno(env, failed, err);
  return env.Undefined();
}

// shmRemove(id, asUid, asGid): IPC_RMID, as the creator when asked (see Set).
Napi::Value Remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rc, err = 0;
  {
    ThreadIdentity as(I64(info[1]), I64(info[2]));
    if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error());
    rc = shmctl(I32(info[0]), IPC_RMID, nullptr);
    if (rc != 0) err = errno;
  }
  if (rc != 0) ThrowErrno(env, "shmctl", err);
  return env.Undefined();
}

Napi::Value Limits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct shminfo limits;
  if (shmctl(0, IPC_INFO, reinterpret_cast<struct shmid_ds*>(&limits)) < 0) ThrowErrno(env, "shmctl", errno);
  struct shm_info usage;
  if (shmctl(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&usage)) < 0) ThrowErrno(env, "shmctl", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("shmmax", Napi::Number::New(env, static_cast<double>(limits.shmmax)));
  o.Set("shmmin", Napi::Number::New(env, static_cast<double>(limits.shmmin)));
  o.Set("shmmni", Napi::Number::New(env, static_cast<double>(limits.shmmni)));
  o.Set("shmseg", Napi::Number::New(env, static_cast<double>(limits.shmseg)));
  o.Set("shmall", Napi::Number::New(env, static_cast<double>(limits.shmall)));
  o.Set("usedIds", Napi::Number::New(env, usage.used_ids));
  o.Set("totalPages", Napi::Number::New(env, static_cast<double>(usage.shm_tot)));
  o.Set("residentPages", Napi::Number::New(env, static_cast<double>(usage.shm_rss)));
  o.Set("swappedPages", Napi::Number::New(env, static_cast<double>(usage.shm_swp)));
  return o;
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmGet", Napi::Function::New(env, Get, "shmGet"));
  exports.Set("shmAttach", Napi::Function::New(env, Attach, "shmAttach"));
  exports.Set("shmDetach", Napi::Function::New(env, Detach, "shmDetach"));
  exports.Set("shmStat", Napi::Function::New(env, Stat, "shmStat"));
  exports.Set("shmList", Napi::Function::New(env, List, "shmList"));
  exports.Set("shmSet", Napi::Function::New(env, Set, "shmSet"));
  exports.Set("shmRemove", Napi::Function::New(env, Remove, "shmRemove"));
  exports.Set("shmLimits", Napi::Function::New(env, Limits, "shmLimits"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("IPC_PRIVATE", Napi::Number::New(env, IPC_PRIVATE));
  c.Set("IPC_CREAT", Napi::Number::New(env, IPC_CREAT));
  c.Set("IPC_EXCL", Napi::Number::New(env, IPC_EXCL));
  c.Set("SHM_HUGETLB", Napi::Number::New(env, SHM_HUGETLB));
  c.Set("SHM_NORESERVE", Napi::Number::New(env, SHM_NORESERVE));
  c.Set("SHM_HUGE_SHIFT", Napi::Number::New(env, SHM_HUGE_SHIFT));
  c.Set("SHM_DEST", Napi::Number::New(env, SHM_DEST));
  c.Set("SHM_LOCKED", Napi::Number::New(env, SHM_LOCKED));
  c.Set("PAGE_SIZE", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))));
  exports.Set("shmConstants", c);
}

}  // namespace shmkeep
