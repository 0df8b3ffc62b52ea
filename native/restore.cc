// restoreSegment({id, uid, gid, path, size, chunkSize, chunks, stopAtFirstBad, lanes?, mapFiles?, cancel?})
// -> {badChunks, bytesRead, mapFiles}: data file -> a new segment, every chunk checked
// against its CRC, chunks shared by `lanes` threads. The segment is new and
// ours alone (src/ gives it its real owner and mode only once every chunk
// verified), so the file's bytes are read straight into it and checksummed
// there — or, with mapFiles, read into a buffer of ours, checksummed, and
// written into the segment's file.
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

#include <algorithm>

#include "chunks.h"
#include "common.h"
#include "copy.h"
#include "job.h"
#include "parallel.h"
#include "residency.h"

namespace shmkeep {
namespace {

class RestoreWorker : public Job {
 public:
  RestoreWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table)
      : Job(env, "shmkeep.restoreSegment", JobTokenOf(o.Get("cancel"))),
        id_(I32(o.Get("id"))),
        uid_(I64(o.Get("uid"))),
        gid_(I64(o.Get("gid"))),
        path_(o.Get("path").As<Napi::String>().Utf8Value()),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        stopAtFirstBad_(o.Get("stopAtFirstBad").ToBoolean()),
        lanes_(LanesOf(o)),
        mapFiles_(o.Get("mapFiles").ToBoolean()),
        cancel_(JobTokenOf(o.Get("cancel"))),
        table_(std::move(table)) {}

  void Execute() override {
    Attachment seg;
    uint64_t segSize;
    {
      ThreadIdentity as(uid_, gid_);
      if (as.error()) return Fail(as.failedSyscall(), as.error());
      void* a = shmat(id_, nullptr, 0);
      if (a == reinterpret_cast<void*>(-1)) return Fail("shmat", errno);
      seg.addr = a;
      // The segment's size, so that a segment smaller than the snapshot is an
      // error rather than SIGSEGV. Attaching read-write took read permission,
      // which is all IPC_STAT needs.
      struct shmid_ds ds;
      if (shmctl(id_, IPC_STAT, &ds) != 0) return Fail("shmctl", errno);
      segSize = ds.shm_segsz;
    }
    if (segSize < size_) {
      return FailWith("the segment has " + std::to_string(segSize) + " bytes, the snapshot " + std::to_string(size_),
                      "ESEGSIZE", {{"segmentSize", static_cast<double>(segSize)}, {"expectedSize", static_cast<double>(size_)}});
    }

    Fd file;
    if (!OpenForRead(path_, size_, file)) return;
    // mapFiles: write the segment through its file (/proc/self/map_files):
    // each piece read into a buffer of ours, checksummed there, pwritten.
    // The new pages are filled by the write, never zeroed first, and never
    // enter our page tables (no populate, no drop): about half the CPU of
    // reading into the attachment. Not for hugetlb (hugetlbfs has no
    // write(2)); where it does not open, the attachment.
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    Fd mapFd;
    if (mapFiles_ && KernelPageSize(seg.addr) == page) {
      const int fd = OpenMapFiles(seg.addr, (segSize + page - 1) / page * page, O_WRONLY);
      if (fd >= 0) mapFd.fd = fd;
    }
    usedMapFiles_ = mapFd.fd >= 0;

    // Each lane (native/parallel.h) reads and checks whole chunks: while one
    // checksums a piece, the other waits for the disk.
    struct Lane : CheckLane {
      int populateErr = 0, writeErr = 0;
      AlignedBuffer buf;  // mapFiles: the piece read, checksummed and written
    };
    const uint64_t chunks = ChunkCount(size_, chunkSize_);
    std::vector<Lane> lanes(std::max<unsigned>(1, lanes_));
    if (mapFd.fd >= 0) {
      for (Lane& l : lanes) {
        if (int err = l.buf.Allocate(kPiece, 4096)) return Fail("posix_memalign", err);
      }
    }
    ForEachChunk(lanes_, 0, chunks, [&](unsigned k, uint64_t i) {
      if (cancel_ && cancel_->cancelled.load(std::memory_order_relaxed)) return false;
      Lane& l = lanes[k];
      const uint64_t off = i * chunkSize_;
      const size_t len = ChunkLength(i, size_, chunkSize_);
      const uint8_t* entry = &table_[i * kEntry];
      bool good;
      if (entry[4] == kZero) {
        // A fresh segment is zero already: leave its memory untouched. The
        // entry's CRC must still be the CRC of zeros.
        good = EntryCrc(entry) == Crc32cZeros(0, len);
      } else {
        // Only the file's data runs are read into the segment: its holes
        // (pages the app never touched) stay untouched zeros in the new
        // segment too.
        int r;
        if (mapFd.fd >= 0) {
          auto into = [&l](uint64_t, size_t) { return l.buf.data(); };
          auto put = [&](const uint8_t* p, size_t n, uint64_t at) { return (l.writeErr = WriteAll(mapFd.fd, p, n, at)) == 0; };
          r = ReadStoredChunk(file.fd, off, len, kPiece, EntryCrc(entry), into, put, l.bytesRead);
          if (l.writeErr) return l.error.Set("pwrite", l.writeErr);
        } else {
          auto into = [&](uint64_t at, size_t n) -> uint8_t* {
            uint8_t* q = seg.bytes() + at;
            if ((l.populateErr = Populate(q, n, kMadvPopulateWrite))) return nullptr;
            return q;
          };
          r = ReadStoredChunk(file.fd, off, len, kPiece, EntryCrc(entry), into, AcceptAll(), l.bytesRead);
          if (r == kDestFailed) return l.error.Set("madvise", l.populateErr);
          DropMapping(seg.bytes() + off, len);
        }
        if (r < 0) return l.error.Set("pread", -r);
        good = r == 1;
        posix_fadvise(file.fd, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
      }
      Done(len);
      if (good) return true;
      l.bad.push_back(i);
      return !stopAtFirstBad_;
    });
    if (Cancelled()) return;
    const LaneError e = MergeChecks(lanes, bad_, bytesRead_);
    if (e.err) return Fail(e.syscall, e.err);
    // Read-only: close's error tells nothing about the data.
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = BadChunksResult(env, bad_, bytesRead_).As<Napi::Object>();
    o.Set("mapFiles", Napi::Boolean::New(env, usedMapFiles_));
    return o;
  }

 private:
  const int id_;
  const int64_t uid_, gid_;
  const std::string path_;
  const uint64_t size_, chunkSize_;
  const bool stopAtFirstBad_;
  const unsigned lanes_;
  const bool mapFiles_;
  const JobTokenRef cancel_;  // also polled by the lanes' helper threads
  const std::vector<uint8_t> table_;
  std::vector<uint64_t> bad_;
  uint64_t bytesRead_ = 0;
  bool usedMapFiles_ = false;
};

}  // namespace

Napi::Value RestoreSegment(const Napi::CallbackInfo& info) { return StartWithTable<RestoreWorker>(info); }

}  // namespace shmkeep
