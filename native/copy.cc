#include "common.h"
namespace shmkeep {
void InitCopy(Napi::Env, Napi::Object) {}
}  // namespace shmkeep
