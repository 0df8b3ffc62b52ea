// The copy path's entry points, one file each (InitCopy in copy.cc exports them).
#pragma once

#include <napi.h>

namespace shmkeep {

Napi::Value SaveSegment(const Napi::CallbackInfo& info);     // save.cc
Napi::Value SavePacked(const Napi::CallbackInfo& info);      // save.cc
Napi::Value RestoreSegment(const Napi::CallbackInfo& info);  // restore.cc
Napi::Value VerifyFile(const Napi::CallbackInfo& info);      // verify.cc
Napi::Value CopyCarried(const Napi::CallbackInfo& info);     // verify.cc

}  // namespace shmkeep
