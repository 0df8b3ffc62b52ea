// Entry point of the addon: one Init per concern. No state lives in globals;
// every record the addon hands out is owned by the JS values that carry it.
#include "common.h"
#include "job.h"

namespace shmkeep {

void InitSem(Napi::Env env, Napi::Object exports);  // sem.cc
void InitMsg(Napi::Env env, Napi::Object exports);  // msg.cc
void InitPosixShm(Napi::Env env, Napi::Object exports);  // posixshm.cc
void InitMqueue(Napi::Env env, Napi::Object exports);  // mqueue.cc

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitShm(env, exports);
  InitMmap(env, exports);
  InitLock(env, exports);
  InitCopy(env, exports);
  InitJob(env, exports);
  InitProc(env, exports);
  InitSem(env, exports);
  InitMsg(env, exports);
  InitPosixShm(env, exports);
  InitMqueue(env, exports);
  return exports;
}

}  // namespace shmkeep

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return shmkeep::Init(env, exports); }

NODE_API_MODULE(shmkeep, InitAddon)
