// POSIX shared memory objects (files of the tmpfs at /dev/shm): the one thing
// Node's fs cannot tell, which byte ranges of a file hold data and which are
// holes (lseek SEEK_DATA/SEEK_HOLE). Reading, writing, stat, chmod and chown
// are Node's fs; which files, and what to do with holes, is src/kinds/posixshm.ts.
#include "common.h"
#include "fileio.h"

namespace shmkeep {
namespace {

// posixDataRuns(fd, size) -> [offset, length, offset, length, ...]: the data
// runs of the file's first `size` bytes (a file system without SEEK_DATA
// reports one run: all of it).
Napi::Value DataRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = I32(info[0]);
  const uint64_t size = static_cast<uint64_t>(I64(info[1]));
  std::vector<Run> runs = FileDataRuns(fd, 0, static_cast<size_t>(size));
  Napi::Array out = Napi::Array::New(env, runs.size() * 2);
  for (size_t i = 0; i < runs.size(); i++) {
    out.Set(static_cast<uint32_t>(2 * i), Napi::Number::New(env, static_cast<double>(runs[i].start)));
    out.Set(static_cast<uint32_t>(2 * i + 1), Napi::Number::New(env, static_cast<double>(runs[i].len)));
  }
  return out;
}

}  // namespace

void InitPosixShm(Napi::Env env, Napi::Object exports) {
  exports.Set("posixDataRuns", Napi::Function::New(env, DataRuns, "posixDataRuns"));
}

}  // namespace shmkeep
