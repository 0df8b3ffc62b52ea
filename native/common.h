// Shared helpers of the addon: errno errors, argument access, per-thread identity.
// Policy never lives here: the TypeScript layer decides, this file only carries
// out system calls and reports what the kernel said.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace shmkeep {

// A JS Error carrying the raw errno (positive) and the system call's name.
// src/errors.ts turns it into a Node-style error: code = errno name, errno < 0,
// and the key or id the caller was working on in the message.
inline Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Value().Set("errno", Napi::Number::New(env, err));
  e.Value().Set("syscall", Napi::String::New(env, syscall));
  return e;
}

[[noreturn]] inline void ThrowErrno(Napi::Env env, const char* syscall, int err) {
  throw ErrnoError(env, syscall, err);
}

// Numbers from JS arrive validated by the TypeScript layer; these only convert.
inline int64_t I64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }
inline int32_t I32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
inline uint32_t U32(const Napi::Value& v) { return v.As<Napi::Number>().Uint32Value(); }
inline bool Bool(const Napi::Value& v) { return v.As<Napi::Boolean>().Value(); }

// Take another identity for the calling thread only. glibc's setresuid()/
// setresgid()/setgroups() change every thread of the process (they broadcast
// with a signal); the raw system calls change the calling thread alone, which
// is what we want on a libuv worker or on the JS thread for one shmat/shmget.
// Real and saved ids stay 0, so the capabilities come back with the euid.
// uid/gid < 0 means "stay as we are". Supplementary groups are dropped while
// switched, so that only the segment's gid can grant group access.
class ThreadIdentity {
 public:
  ThreadIdentity(int64_t uid, int64_t gid) : active_(uid >= 0 || gid >= 0) {
    if (!active_) return;
    ngroups_ = syscall(SYS_getgroups, kMaxGroups, groups_);
    if (ngroups_ < 0) { err_ = errno; syscall_ = "getgroups"; active_ = false; return; }
    if (syscall(SYS_setgroups, 0, nullptr) != 0) { Fail("setgroups"); return; }
    if (gid >= 0 && syscall(SYS_setresgid, -1, (gid_t)gid, -1) != 0) { Fail("setresgid"); return; }
    if (uid >= 0 && syscall(SYS_setresuid, -1, (uid_t)uid, -1) != 0) { Fail("setresuid"); return; }
  }
  ~ThreadIdentity() { Restore(); }
  // errno of the switch, 0 when it worked (or nothing was asked).
  int error() const { return err_; }
  const char* failedSyscall() const { return syscall_; }

 private:
  static constexpr int kMaxGroups = 256;
  void Fail(const char* name) { err_ = errno; syscall_ = name; Restore(); }
  void Restore() {
    if (!active_) return;
    active_ = false;
    // Order matters: regain euid 0 first, it is what permits the rest.
    if (syscall(SYS_setresuid, -1, savedUid_, -1) != 0) Abort("setresuid");
    if (syscall(SYS_setresgid, -1, savedGid_, -1) != 0) Abort("setresgid");
    if (syscall(SYS_setgroups, ngroups_ > 0 ? ngroups_ : 0, groups_) != 0) Abort("setgroups");
  }
  // A thread that cannot take its own identity back would go on serving
  // Node's calls (a libuv pool thread: every later fs call) as another user:
  // end the process rather than let that happen. No allocation, no JS.
  [[noreturn]] static void Abort(const char* name) {
    const int err = errno;
    const char* parts[] = {"shmkeep: fatal: cannot take this thread's own identity back (", name, ": ", strerror(err),
                           "); aborting rather than go on as another user\n"};
    for (const char* p : parts) {
      ssize_t ignored = write(2, p, strlen(p));
      (void)ignored;
    }
    abort();
  }
  bool active_;
  uid_t savedUid_ = geteuid();
  gid_t savedGid_ = getegid();
  gid_t groups_[kMaxGroups];
  long ngroups_ = 0;
  int err_ = 0;
  const char* syscall_ = "";
};

// IPC_STAT result as a plain object (shared by shm.cc and copy.cc).
Napi::Object ShmStatObject(Napi::Env env, int id, const struct shmid_ds& ds);

void InitShm(Napi::Env env, Napi::Object exports);
void InitMmap(Napi::Env env, Napi::Object exports);
void InitLock(Napi::Env env, Napi::Object exports);
void InitCopy(Napi::Env env, Napi::Object exports);
void InitProc(Napi::Env env, Napi::Object exports);

}  // namespace shmkeep
