// flock(2) without blocking: the TypeScript side polls LOCK_NB on a timer so
// the event loop (which forwards signals) never waits inside a system call.
#include <sys/file.h>

#include "common.h"

namespace shmkeep {
namespace {

// flockTry(fd, exclusive) -> true when taken, false when another holder has it.
Napi::Value FlockTry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int op = (Bool(info[1]) ? LOCK_EX : LOCK_SH) | LOCK_NB;
  while (flock(I32(info[0]), op) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    ThrowErrno(env, "flock", errno);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value Funlock(const Napi::CallbackInfo& info) {
  if (flock(I32(info[0]), LOCK_UN) != 0) ThrowErrno(info.Env(), "flock", errno);
  return info.Env().Undefined();
}

}  // namespace

void InitLock(Napi::Env env, Napi::Object exports) {
  exports.Set("flockTry", Napi::Function::New(env, FlockTry, "flockTry"));
  exports.Set("flockRelease", Napi::Function::New(env, Funlock, "flockRelease"));
}

}  // namespace shmkeep
