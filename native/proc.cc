#include "common.h"
namespace shmkeep {
void InitProc(Napi::Env, Napi::Object) {}
}  // namespace shmkeep
