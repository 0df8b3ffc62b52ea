// System V semaphore sets: semget, semctl (IPC_STAT, SEM_STAT_ANY, GETALL,
// SETALL, GETPID/GETNCNT/GETZCNT, IPC_SET, IPC_RMID, IPC_INFO, SEM_INFO) and
// semop with IPC_NOWAIT. Arguments arrive validated from src/sem.ts; errors go
// back as errno errors. Calls that need a permission (stat, read, write, set,
// remove) take an identity (uid/gid, -1 = as we are) for the calling thread,
// as shm.cc does: root in a container has no CAP_IPC_OWNER.
#include <sys/ipc.h>
#include <sys/sem.h>

#include <vector>

#include "common.h"

#ifndef SEM_STAT_ANY
#define SEM_STAT_ANY 20  // Linux >= 4.17; older kernels answer EINVAL
#endif

namespace shmkeep {
namespace {

// glibc leaves the union to the caller (semctl(2)).
union semun {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
  struct seminfo* __buf;
};

Napi::Object SemStatObject(Napi::Env env, int id, const struct semid_ds& ds) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", id);
  o.Set("key", Napi::Number::New(env, static_cast<uint32_t>(ds.sem_perm.__key)));
  o.Set("nsems", Napi::Number::New(env, static_cast<double>(ds.sem_nsems)));
  o.Set("mode", Napi::Number::New(env, ds.sem_perm.mode));
  o.Set("uid", Napi::Number::New(env, ds.sem_perm.uid));
  o.Set("gid", Napi::Number::New(env, ds.sem_perm.gid));
  o.Set("cuid", Napi::Number::New(env, ds.sem_perm.cuid));
  o.Set("cgid", Napi::Number::New(env, ds.sem_perm.cgid));
  o.Set("otime", Napi::Number::New(env, static_cast<double>(ds.sem_otime)));
  o.Set("ctime", Napi::Number::New(env, static_cast<double>(ds.sem_ctime)));
  return o;
}

#define AS_IDENTITY(uidArg, gidArg)                                   \
  ThreadIdentity as(I64(uidArg), I64(gidArg));                        \
  if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error())

// semGet(key, nsems, flags, uid, gid) -> id (created as uid/gid when given,
// so that cuid/cgid are the original creator's).
Napi::Value Get(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id, err = 0;
  {
    AS_IDENTITY(info[3], info[4]);
    id = semget(static_cast<key_t>(U32(info[0])), I32(info[1]), I32(info[2]));
    if (id < 0) err = errno;
  }
  if (id < 0) ThrowErrno(env, "semget", err);
  return Napi::Number::New(env, id);
}

// semStat(id, uid, gid): IPC_STAT needs read permission.
Napi::Value Stat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  struct semid_ds ds;
  union semun arg;
  arg.buf = &ds;
  int rc, err = 0;
  {
    AS_IDENTITY(info[1], info[2]);
    rc = semctl(id, 0, IPC_STAT, arg);
    if (rc < 0) err = errno;
  }
  if (rc < 0) ThrowErrno(env, "semctl", err);
  return SemStatObject(env, id, ds);
}

// Every set of the namespace, by index up to SEM_INFO's highest; see shm.cc's
// List for the fallback to SEM_STAT on kernels without SEM_STAT_ANY.
uint32_t StatAll(Napi::Env env, Napi::Array sets, int maxIndex, int cmd) {
  uint32_t n = 0;
  for (int index = 0; index <= maxIndex; index++) {
    struct semid_ds ds;
    union semun arg;
    arg.buf = &ds;
    int id = semctl(index, 0, cmd, arg);
    if (id < 0) continue;  // unused index (EINVAL), or unreadable under SEM_STAT (EACCES)
    sets.Set(n++, SemStatObject(env, id, ds));
  }
  return n;
}

Napi::Value List(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct seminfo si;
  union semun arg;
  arg.__buf = &si;
  int maxIndex = semctl(0, 0, SEM_INFO, arg);
  if (maxIndex < 0) ThrowErrno(env, "semctl", errno);
  Napi::Array sets = Napi::Array::New(env);
  bool statAny = true;
  // SEM_INFO puts the number of sets in semusz.
  if (StatAll(env, sets, maxIndex, SEM_STAT_ANY) == 0 && si.semusz > 0) {
    statAny = false;
    StatAll(env, sets, maxIndex, SEM_STAT);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("sets", sets);
  out.Set("statAny", Napi::Boolean::New(env, statAny));
  out.Set("usedIds", Napi::Number::New(env, si.semusz));
  return out;
}

// semGetAll(id, nsems, uid, gid) -> number[] (GETALL, read permission).
Napi::Value GetAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  std::vector<unsigned short> values(static_cast<size_t>(I32(info[1])) + 1);
  union semun arg;
  arg.array = values.data();
  int rc, err = 0;
  {
    AS_IDENTITY(info[2], info[3]);
    rc = semctl(id, 0, GETALL, arg);
    if (rc < 0) err = errno;
  }
  if (rc < 0) ThrowErrno(env, "semctl", err);
  Napi::Array out = Napi::Array::New(env, values.size() - 1);
  for (uint32_t i = 0; i + 1 < values.size(); i++) out.Set(i, Napi::Number::New(env, values[i]));
  return out;
}

// semWaiters(id, nsems, uid, gid) -> {pid[], ncnt[], zcnt[]}: GETPID, GETNCNT
// and GETZCNT of every semaphore (read permission).
Napi::Value Waiters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  int nsems = I32(info[1]);
  Napi::Array pid = Napi::Array::New(env), ncnt = Napi::Array::New(env), zcnt = Napi::Array::New(env);
  int err = 0;
  {
    AS_IDENTITY(info[2], info[3]);
    for (int i = 0; i < nsems && !err; i++) {
      int p = semctl(id, i, GETPID), n = semctl(id, i, GETNCNT), z = semctl(id, i, GETZCNT);
      if (p < 0 || n < 0 || z < 0) { err = errno; break; }
      pid.Set(i, p);
      ncnt.Set(i, n);
      zcnt.Set(i, z);
    }
  }
  if (err) ThrowErrno(env, "semctl", err);
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", pid);
  out.Set("ncnt", ncnt);
  out.Set("zcnt", zcnt);
  return out;
}

// semSetAll(id, values[], uid, gid): SETALL (write permission). The kernel
// also clears every process's undo adjustment for the set.
Napi::Value SetAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<unsigned short> values(a.Length() + 1);
  for (uint32_t i = 0; i < a.Length(); i++) values[i] = static_cast<unsigned short>(a.Get(i).As<Napi::Number>().Uint32Value());
  union semun arg;
  arg.array = values.data();
  int rc, err = 0;
  {
    AS_IDENTITY(info[2], info[3]);
    rc = semctl(id, 0, SETALL, arg);
    if (rc < 0) err = errno;
  }
  if (rc < 0) ThrowErrno(env, "semctl", err);
  return env.Undefined();
}

// semOp(id, [num, op, flags]..., uid, gid) -> true, or false when it would
// block (EAGAIN): semop always with IPC_NOWAIT, never waiting on the JS thread.
Napi::Value Op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<struct sembuf> ops(a.Length() / 3);
  for (uint32_t i = 0; i < ops.size(); i++) {
    ops[i].sem_num = static_cast<unsigned short>(a.Get(3 * i).As<Napi::Number>().Uint32Value());
    ops[i].sem_op = static_cast<short>(a.Get(3 * i + 1).As<Napi::Number>().Int32Value());
    ops[i].sem_flg = static_cast<short>(a.Get(3 * i + 2).As<Napi::Number>().Int32Value() | IPC_NOWAIT);
  }
  int rc, err = 0;
  {
    AS_IDENTITY(info[2], info[3]);
    rc = semop(id, ops.data(), ops.size());
    if (rc < 0) err = errno;
  }
  if (rc < 0 && err == EAGAIN) return Napi::Boolean::New(env, false);
  if (rc < 0) ThrowErrno(env, "semop", err);
  return Napi::Boolean::New(env, true);
}

// semSet(id, uid|-1, gid|-1, mode|-1, asUid, asGid): IPC_SET of the fields
// given, as the creator when asked (IPC_SET: owner, creator or CAP_SYS_ADMIN).
Napi::Value Set(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  int64_t uid = I64(info[1]), gid = I64(info[2]), mode = I64(info[3]);
  int err = 0;
  {
    AS_IDENTITY(info[4], info[5]);
    struct semid_ds ds;
    union semun arg;
    arg.buf = &ds;
    // IPC_SET reads only uid, gid and mode. The current ones come from
    // IPC_STAT, which needs read permission that an owner of a 0200 set
    // lacks: when all three are given it is not needed.
    bool all = uid >= 0 && gid >= 0 && mode >= 0;
    memset(&ds, 0, sizeof ds);
    if (semctl(id, 0, IPC_STAT, arg) != 0 && !all) {
      err = errno;
    } else {
      if (uid >= 0) ds.sem_perm.uid = static_cast<uid_t>(uid);
      if (gid >= 0) ds.sem_perm.gid = static_cast<gid_t>(gid);
      if (mode >= 0) ds.sem_perm.mode = static_cast<unsigned short>(mode);
      if (semctl(id, 0, IPC_SET, arg) != 0) err = errno;
    }
  }
  if (err) ThrowErrno(env, "semctl", err);
  return env.Undefined();
}

// semRemove(id, asUid, asGid): IPC_RMID (wakes every waiter with EIDRM).
Napi::Value Remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rc, err = 0;
  {
    AS_IDENTITY(info[1], info[2]);
    rc = semctl(I32(info[0]), 0, IPC_RMID);
    if (rc != 0) err = errno;
  }
  if (rc != 0) ThrowErrno(env, "semctl", err);
  return env.Undefined();
}

// IPC_INFO (the limits: kernel.sem) and SEM_INFO (the usage).
Napi::Value Limits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct seminfo limits, usage;
  union semun arg;
  arg.__buf = &limits;
  if (semctl(0, 0, IPC_INFO, arg) < 0) ThrowErrno(env, "semctl", errno);
  arg.__buf = &usage;
  int maxIndex = semctl(0, 0, SEM_INFO, arg);
  if (maxIndex < 0) ThrowErrno(env, "semctl", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("semmsl", limits.semmsl);
  o.Set("semmns", limits.semmns);
  o.Set("semopm", limits.semopm);
  o.Set("semmni", limits.semmni);
  o.Set("semvmx", limits.semvmx);
  o.Set("semaem", limits.semaem);
  o.Set("usedIds", usage.semusz);
  o.Set("usedSems", usage.semaem);
  o.Set("maxIndex", maxIndex);
  return o;
}

}  // namespace

void InitSem(Napi::Env env, Napi::Object exports) {
  exports.Set("semGet", Napi::Function::New(env, Get, "semGet"));
  exports.Set("semStat", Napi::Function::New(env, Stat, "semStat"));
  exports.Set("semList", Napi::Function::New(env, List, "semList"));
  exports.Set("semGetAll", Napi::Function::New(env, GetAll, "semGetAll"));
  exports.Set("semWaiters", Napi::Function::New(env, Waiters, "semWaiters"));
  exports.Set("semSetAll", Napi::Function::New(env, SetAll, "semSetAll"));
  exports.Set("semOp", Napi::Function::New(env, Op, "semOp"));
  exports.Set("semSet", Napi::Function::New(env, Set, "semSet"));
  exports.Set("semRemove", Napi::Function::New(env, Remove, "semRemove"));
  exports.Set("semLimits", Napi::Function::New(env, Limits, "semLimits"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("SEM_UNDO", Napi::Number::New(env, SEM_UNDO));
  exports.Set("semConstants", c);
}

}  // namespace shmkeep
