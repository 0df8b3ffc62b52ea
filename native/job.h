// The base of the copy path's async workers: a promise, how the work failed,
// the job token (a cancel flag polled per chunk, a count of bytes done), and
// the argument checks they share.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fileio.h"

namespace shmkeep {

// What the JS thread and an operation's workers share (cancelToken() in JS,
// given to every worker of the operation as `cancel`): `cancelled` is set by
// cancelCopy and polled by the workers between chunks; the workers add each
// chunk's bytes to `bytesDone` as they finish it, and jobBytes(token) reads
// it, so that progress moves within a multi-GiB segment (src/progress.ts).
// Relaxed atomics: a flag and a counter that order nothing else, one add per
// chunk.
struct JobToken {
  std::atomic<bool> cancelled{false};
  std::atomic<uint64_t> bytesDone{0};
};
using JobTokenRef = std::shared_ptr<JobToken>;

// The token made by cancelToken() (type-tagged: no other External passes);
// nullptr for anything else (the work cannot be cancelled, counts nothing).
JobTokenRef JobTokenOf(const Napi::Value& v);
// cancelToken, cancelCopy and jobBytes.
void InitJob(Napi::Env env, Napi::Object exports);

// Each operation is an AsyncWorker that settles a promise: Execute() does
// only system calls and byte loops, OnOK() builds the JS result or the
// rejection. The policy (file names, chunk size, what to do with bad chunks
// or a partial file) is src/'s.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, const char* name, JobTokenRef token = nullptr);
  Napi::Promise Promise() const { return deferred_.Promise(); }
  // Queue it and return its promise.
  Napi::Value Start();

 protected:
  virtual Napi::Value Result(Napi::Env env) = 0;

  // The first failure wins; Execute returns right after.
  void Fail(const char* syscall, int err);
  // A failure that is no errno: an Error with this message, code and numbers.
  void FailWith(std::string message, const char* code, std::vector<std::pair<const char*, double>> props);
  // Marks the rejection as "the segment is gone" (EINVAL/EIDRM of IPC_STAT
  // or shmat): src/ counts it as vanished, not as a failure.
  void MarkVanished() { vanished_ = true; }
  // Cancelled from JS? Then fails with ECANCELED and returns true: poll it
  // between chunks and return when it says so.
  bool Cancelled();
  // `bytes` more of this job's work are done (call it once per chunk): added
  // to the token's count. Again() before a second pass over the same bytes
  // (an incremental save that found a change): they count once, the second
  // pass adds only once it goes past where the first one stopped.
  // Thread-safe: the lanes of one job (native/parallel.h) call it at once;
  // the compare-exchange gives each byte beyond counted_ to one caller.
  void Done(uint64_t bytes) {
    const uint64_t pass = pass_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    uint64_t counted = counted_.load(std::memory_order_relaxed);
    while (pass > counted && !counted_.compare_exchange_weak(counted, pass, std::memory_order_relaxed)) {
    }
    if (token_ && pass > counted) token_->bytesDone.fetch_add(pass - counted, std::memory_order_relaxed);
  }
  void Again() { pass_ = 0; }  // between passes: no lane runs

  // open + fstat + size check of a data file we read (restore, verify).
  // O_NONBLOCK: a FIFO at the path must not hang the worker in open().
  bool OpenForRead(const std::string& path, uint64_t size, Fd& file);

  void OnOK() override;
  void OnError(const Napi::Error& e) override;

  Napi::Value BadChunksResult(Napi::Env env, const std::vector<uint64_t>& bad, uint64_t bytesRead);

 private:
  Napi::Promise::Deferred deferred_;
  JobTokenRef token_;
  std::atomic<uint64_t> pass_{0};     // bytes Done() in this pass
  std::atomic<uint64_t> counted_{0};  // bytes added to the token (the most of any pass)
  const char* syscall_ = "";
  int err_ = 0;
  bool vanished_ = false;
  std::string message_;
  const char* code_ = nullptr;
  std::vector<std::pair<const char*, double>> props_;
};

// An already-settled promise for argument errors found on the JS thread.
Napi::Value Rejected(Napi::Env env, Napi::Error e);
Napi::Value TableError(Napi::Env env, const std::string& message);
inline bool PathGiven(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }
std::vector<uint8_t> BytesOf(const Napi::Value& v);  // a copy of a TypedArray's bytes (empty otherwise)

// The chunk table of restore/verify/copyCarried, checked against size and
// chunkSize and copied (the worker must not read a JS Buffer the program may
// change). Returns false after having set *rejection.
bool TakeTable(Napi::Env env, const Napi::Object& o, uint64_t size, uint64_t chunkSize, std::vector<uint8_t>& table,
               Napi::Value* rejection);
// size/chunkSize/chunks of restore and verify; false with *rejection set.
bool CheckGeometry(Napi::Env env, const Napi::Object& o, std::vector<uint8_t>& table, Napi::Value* rejection);

// Entry of a worker over a stored file (restore, verify): checks size,
// chunkSize and the table on the JS thread, then queues W(env, o, table).
template <typename W>
Napi::Value StartWithTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<uint8_t> table;
  Napi::Value rejection;
  if (!CheckGeometry(env, o, table, &rejection)) return rejection;
  return (new W(env, o, std::move(table)))->Start();
}

}  // namespace shmkeep
