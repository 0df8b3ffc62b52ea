// The base of the copy path's async workers (see job.h).
#include "job.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "chunks.h"
#include "common.h"

namespace shmkeep {

namespace {
const napi_type_tag kCancelTag = {0x73686d6b65657063ULL, 0x616e63656c746f6bULL};
}

JobTokenRef JobTokenOf(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  bool ours = false;
  if (napi_check_object_type_tag(v.Env(), v, &kCancelTag, &ours) != napi_ok || !ours) return nullptr;
  return *v.As<Napi::External<JobTokenRef>>().Data();
}

namespace {

// cancelToken() -> token: given as {cancel: token} to the workers of one
// operation; they poll its flag between chunks and count their bytes in it.
Napi::Value CancelToken(const Napi::CallbackInfo& info) {
  auto* token = new JobTokenRef(std::make_shared<JobToken>());
  auto v = Napi::External<JobTokenRef>::New(info.Env(), token, [](Napi::Env, JobTokenRef* t) { delete t; });
  napi_type_tag_object(info.Env(), v, &kCancelTag);
  return v;
}

JobTokenRef TokenArg(const Napi::CallbackInfo& info, const char* fn) {
  JobTokenRef token = JobTokenOf(info[0]);
  if (!token) throw Napi::TypeError::New(info.Env(), std::string(fn) + " expects a token from cancelToken()");
  return token;
}

// cancelCopy(token): the workers fail with ECANCELED at their next chunk.
Napi::Value CancelCopy(const Napi::CallbackInfo& info) {
  TokenArg(info, "cancelCopy")->cancelled.store(true);
  return info.Env().Undefined();
}

// jobBytes(token) -> bytes the token's workers have done so far: a load, cheap
// enough for a progress timer.
Napi::Value JobBytes(const Napi::CallbackInfo& info) {
  uint64_t n = TokenArg(info, "jobBytes")->bytesDone.load(std::memory_order_relaxed);
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

}  // namespace

void InitJob(Napi::Env env, Napi::Object exports) {
  exports.Set("cancelCopy", Napi::Function::New(env, CancelCopy, "cancelCopy"));
  exports.Set("cancelToken", Napi::Function::New(env, CancelToken, "cancelToken"));
  exports.Set("jobBytes", Napi::Function::New(env, JobBytes, "jobBytes"));
}

Job::Job(Napi::Env env, const char* name, JobTokenRef token)
    : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), token_(std::move(token)) {}

Napi::Value Job::Start() {
  Napi::Promise p = deferred_.Promise();
  Queue();
  return p;
}

void Job::Fail(const char* syscall, int err) {
  if (err_ == 0 && code_ == nullptr) {
    syscall_ = syscall;
    err_ = err;
  }
}

void Job::FailWith(std::string message, const char* code, std::vector<std::pair<const char*, double>> props) {
  if (err_ == 0 && code_ == nullptr) {
    message_ = std::move(message);
    code_ = code;
    props_ = std::move(props);
  }
}

bool Job::Cancelled() {
  if (!token_ || !token_->cancelled.load(std::memory_order_relaxed)) return false;
  Fail("cancel", ECANCELED);
  return true;
}

bool Job::OpenForRead(const std::string& path, uint64_t size, Fd& file) {
  file.fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (file.fd < 0) return Fail("open", errno), false;
  struct stat st;
  if (fstat(file.fd, &st) != 0) return Fail("fstat", errno), false;
  if (!S_ISREG(st.st_mode)) return Fail("fstat", EINVAL), false;
  if (static_cast<uint64_t>(st.st_size) != size) {
    FailWith("the data file has " + std::to_string(st.st_size) + " bytes, the chunk table describes " +
                 std::to_string(size),
             "ESIZE", {{"fileSize", static_cast<double>(st.st_size)}, {"expectedSize", static_cast<double>(size)}});
    return false;
  }
  posix_fadvise(file.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return true;
}

void Job::OnOK() {
  Napi::Env env = Env();
  try {
    if (err_ != 0) {
      Napi::Error e = ErrnoError(env, syscall_, err_);
      if (vanished_) e.Value().Set("vanished", Napi::Boolean::New(env, true));
      deferred_.Reject(e.Value());
    } else if (code_ != nullptr) {
      Napi::Error e = Napi::Error::New(env, message_);
      e.Value().Set("code", Napi::String::New(env, code_));
      for (const auto& prop : props_) e.Value().Set(prop.first, Napi::Number::New(env, prop.second));
      deferred_.Reject(e.Value());
    } else {
      deferred_.Resolve(Result(env));
    }
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
}

void Job::OnError(const Napi::Error& e) { deferred_.Reject(e.Value()); }

Napi::Value Job::BadChunksResult(Napi::Env env, const std::vector<uint64_t>& bad, uint64_t bytesRead) {
  Napi::Array list = Napi::Array::New(env, bad.size());
  for (size_t i = 0; i < bad.size(); i++) list.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(bad[i])));
  Napi::Object o = Napi::Object::New(env);
  o.Set("badChunks", list);
  o.Set("bytesRead", Napi::Number::New(env, static_cast<double>(bytesRead)));
  return o;
}

Napi::Value Rejected(Napi::Env env, Napi::Error e) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

Napi::Value TableError(Napi::Env env, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, "ETABLE"));
  return Rejected(env, e);
}

std::vector<uint8_t> BytesOf(const Napi::Value& v) {
  if (!v.IsTypedArray()) return {};
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  const uint8_t* d = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  return std::vector<uint8_t>(d, d + t.ByteLength());
}

bool TakeTable(Napi::Env env, const Napi::Object& o, uint64_t size, uint64_t chunkSize, std::vector<uint8_t>& table,
               Napi::Value* rejection) {
  Napi::Value v = o.Get("chunks");
  if (!v.IsTypedArray()) {
    *rejection = TableError(env, "chunks must be a Buffer");
    return false;
  }
  size_t bytes = v.As<Napi::TypedArray>().ByteLength();
  uint64_t expected = ChunkCount(size, chunkSize) * kEntry;
  if (bytes != expected) {
    *rejection = TableError(env, "the chunk table has " + std::to_string(bytes) + " bytes; " + std::to_string(size) +
                                     " bytes in chunks of " + std::to_string(chunkSize) + " need " +
                                     std::to_string(expected));
    return false;
  }
  table = BytesOf(v);
  for (size_t i = 0; i < bytes; i += kEntry) {
    if (table[i + 4] != kZero && table[i + 4] != kData) {
      *rejection = TableError(env, "chunk " + std::to_string(i / kEntry) + " has the unknown type " +
                                       std::to_string(table[i + 4]));
      return false;
    }
  }
  return true;
}

bool CheckGeometry(Napi::Env env, const Napi::Object& o, std::vector<uint8_t>& table, Napi::Value* rejection) {
  int64_t size = I64(o.Get("size"));
  int64_t chunkSize = I64(o.Get("chunkSize"));
  if (size < 0 || chunkSize <= 0) {
    *rejection = Rejected(env, Napi::RangeError::New(env, "size must be >= 0 and chunkSize > 0"));
    return false;
  }
  return TakeTable(env, o, static_cast<uint64_t>(size), static_cast<uint64_t>(chunkSize), table, rejection);
}

}  // namespace shmkeep
