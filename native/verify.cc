// Reading a stored data file against its chunk table:
//   verifyFile({path, size, chunkSize, chunks, first?, count?, lanes?, cancel?}) -> {badChunks, bytesRead}
//     (chunks [first, first + count) only, when given: a snapshot's sweep;
//     chunks shared by `lanes` threads)
//   copyCarried({from, fd, size, chunkSize, chunks, carried, cancel?}) -> {bytesCopied}
// Both read through a buffer of ours, piece by piece, with ReadStoredChunk.
#include <fcntl.h>


#include "chunks.h"
#include "common.h"
#include "copy.h"
#include "job.h"
#include "parallel.h"
#include "residency.h"

namespace shmkeep {
namespace {

constexpr size_t kBuffer = size_t{256} << 10;  // small enough to CRC while cache-hot

class VerifyWorker : public Job {
 public:
  VerifyWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table)
      : Job(env, "shmkeep.verifyFile", JobTokenOf(o.Get("cancel"))),
        path_(o.Get("path").As<Napi::String>().Utf8Value()),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        first_(o.Get("first").IsNumber() ? static_cast<uint64_t>(std::max<int64_t>(0, I64(o.Get("first")))) : 0),
        count_(o.Get("count").IsNumber() ? static_cast<uint64_t>(std::max<int64_t>(0, I64(o.Get("count")))) : UINT64_MAX),
        lanes_(LanesOf(o)),
        cancel_(JobTokenOf(o.Get("cancel"))),
        table_(std::move(table)) {}

  void Execute() override {
    Fd file;
    if (!OpenForRead(path_, size_, file)) return;
    // Each lane (native/parallel.h) reads and checks whole chunks through
    // a buffer of its own: while one checksums a piece, the other waits for
    // the disk.
    struct Lane : CheckLane {
      AlignedBuffer buf;
    };
    std::vector<Lane> lanes(std::max<unsigned>(1, lanes_));
    for (Lane& l : lanes) {
      if (int err = l.buf.Allocate(kBuffer, 4096)) return Fail("posix_memalign", err);
    }
    auto zeros = [](const uint8_t* p, size_t n, uint64_t) { return IsZero(p, n); };
    const uint64_t chunks = ChunkCount(size_, chunkSize_);
    const uint64_t end = first_ + std::min(count_, chunks - std::min(first_, chunks));
    ForEachChunk(lanes_, first_, end, [&](unsigned k, uint64_t i) {
      if (cancel_ && cancel_->cancelled.load(std::memory_order_relaxed)) return false;
      Lane& l = lanes[k];
      auto into = [&l](uint64_t, size_t) { return l.buf.data(); };
      const uint64_t off = i * chunkSize_;
      const size_t len = ChunkLength(i, size_, chunkSize_);
      const uint8_t* entry = &table_[i * kEntry];
      // A ZERO chunk: holes are fine, whatever data the file has there must
      // be zero bytes (and the entry's CRC that of zeros).
      int r = entry[4] == kZero ? ReadStoredChunk(file.fd, off, len, kBuffer, EntryCrc(entry), into, zeros, l.bytesRead)
                                : ReadStoredChunk(file.fd, off, len, kBuffer, EntryCrc(entry), into, AcceptAll(), l.bytesRead);
      if (r < 0) return l.error.Set("pread", -r);
      if (r == 0) l.bad.push_back(i);
      posix_fadvise(file.fd, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
      Done(len);
      return true;
    });
    if (Cancelled()) return;
    const LaneError e = MergeChecks(lanes, bad_, bytesRead_);
    if (e.err) return Fail(e.syscall, e.err);
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return BadChunksResult(env, bad_, bytesRead_); }

 private:
  const std::string path_;
  const uint64_t size_, chunkSize_, first_, count_;
  const unsigned lanes_;
  const JobTokenRef cancel_;  // also polled by the lanes' helper threads
  const std::vector<uint8_t> table_;
  std::vector<uint64_t> bad_;
  uint64_t bytesRead_ = 0;
};

// After a checkpoint's one pass (saveSegment with carryUnchanged): fill the
// chunks marked carried into fd from the previous generation's data file,
// each checked against its CRC on the way (a previous file damaged on disk is
// an error, code EPREV, never copied silently). What is written is the buffer
// that was checksummed. Holes stay holes.
class CopyCarriedWorker : public Job {
 public:
  CopyCarriedWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table, std::vector<uint8_t> carried)
      : Job(env, "shmkeep.copyCarried", JobTokenOf(o.Get("cancel"))),
        from_(o.Get("from").As<Napi::String>().Utf8Value()),
        fd_(I32(o.Get("fd"))),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        table_(std::move(table)),
        carried_(std::move(carried)) {}

  void Execute() override {
    Fd file;
    if (!OpenForRead(from_, size_, file)) return;
    // A whole chunk is read (and checked) before any of it is written: a
    // damaged chunk never reaches the new file.
    const size_t bufLen = static_cast<size_t>(std::min<uint64_t>(chunkSize_, size_t{4} << 20));
    AlignedBuffer buf;
    if (int err = buf.Allocate(bufLen, 4096)) return Fail("posix_memalign", err);
    uint64_t bytesRead = 0;
    for (uint64_t i = 0; i < carried_.size(); i++) {
      if (!carried_[i]) continue;
      if (Cancelled()) return;
      const uint64_t off = i * chunkSize_;
      const size_t len = ChunkLength(i, size_, chunkSize_);
      std::vector<Run> pieces;
      int err = 0;
      const bool whole = len <= bufLen;
      auto into = [&](uint64_t at, size_t) { return whole ? buf.data() + (at - off) : buf.data(); };
      auto keep = [&](const uint8_t* p, size_t n, uint64_t at) {
        if (whole) return pieces.push_back({static_cast<size_t>(at - off), n}), true;
        // a chunk larger than our buffer: written piece by piece, each checked
        // by the chunk's CRC only at its end (EPREV then abandons the file)
        return (err = WriteAll(fd_, p, n, at)) == 0 ? (bytesCopied_ += n, true) : false;
      };
      int r = ReadStoredChunk(file.fd, off, len, kBuffer, EntryCrc(&table_[i * kEntry]), into, keep, bytesRead);
      if (err) return Fail("pwrite", err);
      if (r < 0) return Fail("pread", -r);
      if (r == 0) return Damaged(i);
      for (const Run& p : pieces) {
        if (int e = WriteAll(fd_, buf.data() + p.start, p.len, off + p.start)) return Fail("pwrite", e);
        bytesCopied_ += p.len;
      }
    }
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("bytesCopied", Napi::Number::New(env, static_cast<double>(bytesCopied_)));
    return o;
  }

 private:
  void Damaged(uint64_t chunk) {
    FailWith("chunk " + std::to_string(chunk) + " of the previous generation's " + from_ + " fails its checksum", "EPREV",
             {{"chunk", static_cast<double>(chunk)}});
  }

  const std::string from_;
  const int fd_;
  const uint64_t size_, chunkSize_;
  const std::vector<uint8_t> table_, carried_;
  uint64_t bytesCopied_ = 0;
};

}  // namespace

Napi::Value VerifyFile(const Napi::CallbackInfo& info) { return StartWithTable<VerifyWorker>(info); }

Napi::Value CopyCarried(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  const uint64_t size = static_cast<uint64_t>(I64(o.Get("size")));
  const uint64_t chunkSize = static_cast<uint64_t>(I64(o.Get("chunkSize")));
  if (chunkSize == 0) return Rejected(env, Napi::RangeError::New(env, "chunkSize must be positive"));
  std::vector<uint8_t> table;
  Napi::Value rejection;
  if (!TakeTable(env, o, size, chunkSize, table, &rejection)) return rejection;
  std::vector<uint8_t> carried = BytesOf(o.Get("carried"));
  if (!o.Get("carried").IsTypedArray() || carried.size() != ChunkCount(size, chunkSize)) {
    return TableError(env, "carried must have one byte per chunk");
  }
  return (new CopyCarriedWorker(env, o, std::move(table), std::move(carried)))->Start();
}

}  // namespace shmkeep
