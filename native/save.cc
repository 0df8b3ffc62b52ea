// saveSegment: segment -> data file + chunk table, on libuv's thread pool.
//
// saveSegment({id, uid, gid, path, chunkSize, holes, fsync, direct?, fd?,
//              previous?, carryUnchanged?, lanes?, cancel?})
//
// Checksum what you write: every byte is copied once from the attachment
// into a buffer of ours (SegmentReader); XXH3-128, CRC-32C and the all-zero
// test are computed over that copy, and that copy is what is written. A
// process that writes the segment meanwhile can tear the image across
// chunks, never make a chunk's checksum describe other bytes than its file's.
//
// With previous = {chunks, hashes} of the same segment in the previous
// generation, a first pass compares without writing anything: when every
// chunk is as it was, the result says unchanged (and carries the previous
// tables) and no file is opened or written. With carryUnchanged (a frozen
// app's checkpoint) there is one pass that writes only the changed chunks and
// marks the others carried (copyCarried fills them later).
// With fd (an open, empty file of the caller's), writes there and leaves it
// open: the caller fsyncs that same descriptor later.
// lanes: how many threads share the chunks (native/parallel.h); their
// buffers go to one writer thread (FileWriter), which writes while they copy
// and hash the next chunks.
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <unistd.h>

#include "chunks.h"
#include "common.h"
#include "fileio.h"
#include "copy.h"
#include "job.h"
#include "parallel.h"
#include "residency.h"

namespace shmkeep {
namespace {

// The most a chunk's copy takes at once: two of these per save (one being
// written while the other is filled).
constexpr size_t kWindow = size_t{4} << 20;

Holes ParseHoles(const Napi::Object& o) {
  Napi::Value h = o.Get("holes");
  if (h.IsString()) {
    std::string s = h.As<Napi::String>().Utf8Value();
    if (s == "mapFiles") return Holes::kMapFiles;
    if (s == "mincore") return Holes::kMincore;
    if (s == "mincoreSwapCheck") return Holes::kMincoreSwapCheck;
    return Holes::kRead;
  }
  return o.Get("skipAbsent").ToBoolean() ? Holes::kMincore : Holes::kRead;
}

class SaveWorker : public Job {
 public:
  SaveWorker(Napi::Env env, const Napi::Object& o)
      : Job(env, "shmkeep.saveSegment", JobTokenOf(o.Get("cancel"))),
        id_(I32(o.Get("id"))),
        uid_(I64(o.Get("uid"))),
        gid_(I64(o.Get("gid"))),
        toFile_(PathGiven(o.Get("path"))),
        path_(toFile_ ? o.Get("path").As<Napi::String>().Utf8Value() : std::string()),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        holes_(ParseHoles(o)),
        fsync_(o.Get("fsync").ToBoolean()),
        direct_(o.Get("direct").ToBoolean()),
        callerFd_(o.Get("fd").IsNumber() ? I32(o.Get("fd")) : -1),
        carryUnchanged_(o.Get("carryUnchanged").ToBoolean()),
        lanes_(LanesOf(o)),
        cancel_(JobTokenOf(o.Get("cancel"))) {
    Napi::Value prev = o.Get("previous");
    if (prev.IsObject()) {
      prevTable_ = BytesOf(prev.As<Napi::Object>().Get("chunks"));
      prevHashes_ = BytesOf(prev.As<Napi::Object>().Get("hashes"));
    }
  }

  void Execute() override {
    Attachment seg;
    {
      // IPC_STAT before shmat: the stat is the segment as its users left it
      // (nattch without us, their atime and lpid). EINVAL/EIDRM: removed
      // since it was listed.
      ThreadIdentity as(uid_, gid_);
      if (as.error()) return Fail(as.failedSyscall(), as.error());
      if (shmctl(id_, IPC_STAT, &ds_) != 0) return Gone("shmctl", errno);
      void* a = shmat(id_, nullptr, SHM_RDONLY);
      if (a == reinterpret_cast<void*>(-1)) return Gone("shmat", errno);
      seg.addr = a;
    }
    Copy(seg);
    if (Failed()) return;
    // Re-stat while still attached: a segment removed meanwhile has SHM_DEST
    // set (its key may already name a new one); src/ drops it.
    ThreadIdentity as(uid_, gid_);
    if (!as.error()) statAfterOk_ = shmctl(id_, IPC_STAT, &after_) == 0;
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("chunks", Napi::Buffer<uint8_t>::Copy(env, table_.data(), table_.size()));
    o.Set("stat", ShmStatObject(env, id_, ds_));
    o.Set("statAfter", statAfterOk_ ? Napi::Value(ShmStatObject(env, id_, after_)) : env.Null());
    o.Set("kernelPageSize", Napi::Number::New(env, static_cast<double>(kernelPageSize_)));
    o.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(bytesWritten_)));
    o.Set("dataChunks", Napi::Number::New(env, static_cast<double>(dataChunks_)));
    o.Set("zeroChunks", Napi::Number::New(env, static_cast<double>(zeroChunks_)));
    o.Set("absentChunks", Napi::Number::New(env, static_cast<double>(absentChunks_)));
    o.Set("hashes", Napi::Buffer<uint8_t>::Copy(env, hashes_.data(), hashes_.size()));
    o.Set("unchanged", Napi::Boolean::New(env, unchanged_ || (carry_ && allCarried_)));
    o.Set("carried", Napi::Buffer<uint8_t>::Copy(env, carried_.data(), carried_.size()));
    o.Set("carriedChunks", Napi::Number::New(env, static_cast<double>(carriedChunks_)));
    o.Set("holesLost", Napi::Boolean::New(env, holesLost_));
    o.Set("direct", Napi::Boolean::New(env, usedDirect_));
    return o;
  }

 private:
  bool Failed() const { return failed_; }
  void Fail(const char* syscall, int err) {
    failed_ = true;
    Job::Fail(syscall, err);
  }
  void Gone(const char* syscall, int err) {
    if (err == EINVAL || err == EIDRM) MarkVanished();
    Fail(syscall, err);
  }

  // One thread's share of a save (native/parallel.h): its reader, its two
  // buffers (one filled while the writer writes the other), its counts.
  struct Lane {
    Lane(const Attachment& seg, int id, uint64_t page, Holes holes, int mapFd, std::atomic<bool>* swapSeen)
        : reader(seg, id, page, holes, mapFd, swapSeen) {}
    SegmentReader reader;
    AlignedBuffer bufs[2];
    int cur = 0;
    uint64_t dataChunks = 0, zeroChunks = 0, absentChunks = 0, carriedChunks = 0, bytesWritten = 0;
    bool allCarried = true;
    LaneError error;
  };
  using Lanes = std::vector<std::unique_ptr<Lane>>;

  bool CancelRequested() const { return cancel_ && cancel_->cancelled.load(std::memory_order_relaxed); }

  // After the lanes returned: cancelled, or a lane failed? Then the save fails.
  bool Stopped(const Lanes& lanes) {
    if (Cancelled()) return failed_ = true;
    for (const auto& l : lanes) {
      if (l->error.err) return Fail(l->error.syscall, l->error.err), true;
    }
    return false;
  }

  void Copy(const Attachment& seg) {
    const uint64_t size = ds_.shm_segsz;
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    kernelPageSize_ = KernelPageSize(seg.addr);
    // mincore() tells whether the segment has a page only for normal (shmem)
    // segments, where it looks the page up in the segment's page cache. For
    // a hugetlb segment it only sees our own page tables, which are empty:
    // every chunk would look absent. There (or when smaps did not say) read
    // every chunk.
    Holes holes = holes_;
    if (kernelPageSize_ != page && (holes == Holes::kMincore || holes == Holes::kMincoreSwapCheck)) holes = Holes::kRead;
    Fd mapFd;
    if (holes == Holes::kMapFiles) {
      const uint64_t unit = kernelPageSize_ ? kernelPageSize_ : page;
      int fd = OpenMapFiles(seg.addr, (size + unit - 1) / unit * unit);
      if (fd < 0) return Fail("open", -fd);
      mapFd.fd = fd;
    }

    chunks_ = ChunkCount(size, chunkSize_);
    window_ = static_cast<size_t>(std::min<uint64_t>(chunkSize_, kWindow));
    // One chunk or smaller: one buffer of its size rounded to the page.
    const size_t bufLen = static_cast<size_t>(std::min<uint64_t>(window_, (size + page - 1) / page * page));
    const bool hasPrev = prevTable_.size() == chunks_ * kEntry && prevHashes_.size() == chunks_ * kHash;
    carry_ = hasPrev && carryUnchanged_;
    if (carry_) carried_.assign(chunks_, 0);
    std::atomic<bool> swapSeen{false};
    const unsigned nLanes = static_cast<unsigned>(std::min<uint64_t>(lanes_, chunks_));
    Lanes lanes;
    for (unsigned k = 0; k < std::max(1u, nLanes); k++) lanes.emplace_back(new Lane(seg, id_, page, holes, mapFd.fd, &swapSeen));

    if (hasPrev && !carry_) {
      // The first pass of an incremental save: every chunk as before? Reads
      // and hashes our copy, writes nothing, stops at the first difference.
      for (const auto& l : lanes) {
        if (int err = l->bufs[0].Allocate(bufLen, 4096)) return Fail("posix_memalign", err);
      }
      std::atomic<bool> same{true};
      ForEachChunk(nLanes, 0, chunks_, [&](unsigned k, uint64_t i) {
        if (CancelRequested()) return false;
        Lane& l = *lanes[k];
        const uint64_t off = i * chunkSize_;
        const uint64_t len = std::min(chunkSize_, size - off);
        ChunkDigest d(false);
        std::vector<Run> runs;
        for (uint64_t w = 0; w < len; w += window_) {
          if (int err = l.reader.Read(off + w, static_cast<size_t>(std::min<uint64_t>(window_, len - w)), l.bufs[0].data(), d, runs)) {
            return l.error.Set(l.reader.failedSyscall(), err);
          }
        }
        Done(len);
        if (prevTable_[i * kEntry + 4] == kZero ? d.zero() : d.SameHash(&prevHashes_[i * kHash])) return true;
        same = false;
        return false;
      });
      if (Stopped(lanes)) return;
      if (same) {
        unchanged_ = true;
        table_ = prevTable_;
        hashes_ = prevHashes_;
        for (uint64_t i = 0; i < chunks_; i++) (table_[i * kEntry + 4] == kZero ? zeroChunks_ : dataChunks_)++;
        holesLost_ = swapSeen;
        return;
      }
    }

    Fd file;
    int out = callerFd_;
    if (out < 0 && toFile_) {
      file.fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (file.fd < 0) return Fail("open", errno);
      out = file.fd;
    }
    if (out >= 0 && ftruncate(out, static_cast<off_t>(size)) != 0) return Fail("ftruncate", errno);
    // Declared after the lanes: destroyed (its thread done with their
    // buffers) before them.
    std::unique_ptr<FileWriter> writer;
    pipelined_ = size > window_;
    size_t align = 4096;
    if (out >= 0) {
      writer.reset(new FileWriter(out, direct_, fsync_ || direct_, pipelined_));
      align = writer->BufferAlign();
    }
    for (const auto& l : lanes) {
      if (int err = l->bufs[0].Allocate(bufLen, align)) return Fail("posix_memalign", err);
      if (writer && pipelined_) {
        if (int err = l->bufs[1].Allocate(bufLen, align)) return Fail("posix_memalign", err);
      }
    }
    table_.resize(chunks_ * kEntry);
    hashes_.assign(chunks_ * kHash, 0);
    Again();
    ForEachChunk(nLanes, 0, chunks_, [&](unsigned k, uint64_t i) { return SaveChunk(*lanes[k], writer.get(), size, i); });
    for (const auto& l : lanes) {
      dataChunks_ += l->dataChunks;
      zeroChunks_ += l->zeroChunks;
      absentChunks_ += l->absentChunks;
      carriedChunks_ += l->carriedChunks;
      bytesWritten_ += l->bytesWritten;
      allCarried_ = allCarried_ && l->allCarried;
    }
    if (Stopped(lanes)) return;
    holesLost_ = swapSeen;
    if (writer) {
      if (int err = writer->Finish()) return Fail(writer->failedSyscall(), err);
      usedDirect_ = writer->direct();
    }
    if (out >= 0 && fsync_ && fsync(out) != 0) return Fail("fsync", errno);
    if (file.fd >= 0) {
      if (int err = file.Close()) return Fail("close", err);
    }
  }

  // Hands the lane's current buffer's runs to the writer; the lane's next
  // copy goes to its other buffer.
  bool Submit(Lane& l, FileWriter* writer, std::vector<Run> runs, uint64_t base) {
    for (const Run& r : runs) l.bytesWritten += r.len;
    if (!writer || runs.empty()) return true;
    if (int err = writer->Submit(l.bufs[l.cur].data(), std::move(runs), base)) return l.error.Set(writer->failedSyscall(), err);
    if (pipelined_) l.cur ^= 1;
    return true;
  }

  // Chunk i: copied into the lane's buffer, digested, its entry made, and
  // (unless carried or zero) its data runs handed to the writer.
  bool SaveChunk(Lane& l, FileWriter* writer, uint64_t size, uint64_t i) {
    if (CancelRequested()) return false;
    const uint64_t off = i * chunkSize_;
    const uint64_t len = std::min(chunkSize_, size - off);
    uint8_t* entry = &table_[i * kEntry];
    // A chunk larger than our buffer is written window by window as it is
    // read (it is then written even if it turns out zero or unchanged:
    // still the bytes its digest describes).
    const bool oneWindow = len <= window_;
    const bool prevData = carry_ && prevTable_[i * kEntry + 4] == kData;
    // A frozen checkpoint's chunk that may be unchanged: hash first, and
    // CRC our copy only if it changed (the pause is this loop).
    const bool lazyCrc = prevData && oneWindow;
    ChunkDigest d(!lazyCrc);
    bool holesOnly = true;
    std::vector<Run> runs;
    for (uint64_t w = 0; w < len; w += window_) {
      const size_t wlen = static_cast<size_t>(std::min<uint64_t>(window_, len - w));
      uint8_t* buf = l.bufs[l.cur].data();
      // The writer may still be writing what this buffer held.
      if (writer) {
        if (int err = writer->Wait(buf)) return l.error.Set(writer->failedSyscall(), err);
      }
      if (int err = l.reader.Read(off + w, wlen, buf, d, runs)) return l.error.Set(l.reader.failedSyscall(), err);
      holesOnly = holesOnly && runs.empty();
      if (!oneWindow && !Submit(l, writer, runs, off + w)) return false;
    }
    if (lazyCrc && d.SameHash(&prevHashes_[i * kHash])) {
      // As in the previous generation: its bytes come from the previous
      // file later (copyCarried); the entry is the previous one.
      memcpy(entry, &prevTable_[i * kEntry], kEntry);
      memcpy(&hashes_[i * kHash], &prevHashes_[i * kHash], kHash);
      carried_[i] = 1;
      l.carriedChunks++;
      l.dataChunks++;
    } else if (d.zero()) {
      PutEntry(entry, Crc32cZeros(0, len), kZero);
      l.zeroChunks++;
      if (holesOnly) l.absentChunks++;  // no page of it was read: src/ knows why
      if (carry_ && prevTable_[i * kEntry + 4] != kZero) l.allCarried = false;
    } else {
      l.allCarried = false;
      const uint32_t crc = lazyCrc ? RunsCrc(l.bufs[l.cur].data(), runs, len) : d.crc();
      if (oneWindow && !Submit(l, writer, std::move(runs), off)) return false;
      PutEntry(entry, crc, kData);
      PutHash(&hashes_[i * kHash], d.Hash());
      l.dataChunks++;
    }
    Done(len);
    return true;
  }

  const int id_;
  const int64_t uid_, gid_;
  const bool toFile_;
  const std::string path_;
  const uint64_t chunkSize_;
  const Holes holes_;
  const bool fsync_, direct_;
  const int callerFd_;
  const bool carryUnchanged_;
  const unsigned lanes_;
  const JobTokenRef cancel_;  // also polled by the lanes' helper threads
  struct shmid_ds ds_ {};
  struct shmid_ds after_ {};
  bool statAfterOk_ = false;
  bool failed_ = false;
  uint64_t chunks_ = 0;
  size_t window_ = 0;
  bool pipelined_ = false;
  std::vector<uint8_t> table_, hashes_, prevTable_, prevHashes_, carried_;
  bool carry_ = false, allCarried_ = true, unchanged_ = false, holesLost_ = false, usedDirect_ = false;
  uint64_t carriedChunks_ = 0;
  uint64_t kernelPageSize_ = 0;
  uint64_t bytesWritten_ = 0, dataChunks_ = 0, zeroChunks_ = 0, absentChunks_ = 0;
};

// savePacked({segments: [{id, uid, gid, size}], fd, offset, chunkSize, holes, cancel?})
// -> [{key, size, chunks, dataChunks, zeroChunks, bytesWritten, offset} | {errno, syscall, message}]
//
// Many small segments in one job (one trip to the thread pool, not one
// each): per segment IPC_STAT, attach, the same SegmentReader copy into a
// buffer of ours, CRC-32C and the zero test of each chunk over that copy, its
// data runs written into the pack file at the next page-aligned offset
// (advanced only for a segment with data). key and size are IPC_STAT's
// before the copy (src/ tells a reused id by them; its listing after the
// copy finds segments removed meanwhile). A segment's failure is its own
// result; the others go on. No hashes: packed segments are written again at
// every snapshot. Few objects back to JS: thousands of them cost more than
// the copy.
class SavePackedWorker : public Job {
 public:
  struct Segment {
    int id;
    int64_t uid, gid;
    uint64_t size;
  };

  SavePackedWorker(Napi::Env env, const Napi::Object& o)
      : Job(env, "shmkeep.savePacked", JobTokenOf(o.Get("cancel"))),
        fd_(I32(o.Get("fd"))),
        offset_(static_cast<uint64_t>(I64(o.Get("offset")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        holes_(ParseHoles(o)) {
    Napi::Array list = o.Get("segments").As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Object s = list.Get(i).As<Napi::Object>();
      segs_.push_back({I32(s.Get("id")), I64(s.Get("uid")), I64(s.Get("gid")), static_cast<uint64_t>(I64(s.Get("size")))});
    }
    out_.resize(segs_.size());
  }

  void Execute() override {
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    uint64_t most = page;
    for (const Segment& s : segs_) most = std::max(most, (s.size + page - 1) / page * page);
    AlignedBuffer buf;
    if (int err = buf.Allocate(static_cast<size_t>(most), 4096)) return Fail("posix_memalign", err);
    uint64_t end = offset_;
    for (size_t i = 0; i < segs_.size(); i++) {
      if (Cancelled()) return;
      SaveOne(segs_[i], out_[i], buf, page, end);
      Done(segs_[i].size);
    }
    // Only data runs were written: the file must still hold each segment's
    // every byte (its last pages may be holes), as a reader checks.
    struct stat st;
    if (fstat(fd_, &st) != 0) return Fail("fstat", errno);
    if (static_cast<uint64_t>(st.st_size) < end && ftruncate(fd_, static_cast<off_t>(end)) != 0) return Fail("ftruncate", errno);
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    Napi::Array list = Napi::Array::New(env, out_.size());
    for (size_t i = 0; i < out_.size(); i++) {
      const Out& r = out_[i];
      Napi::Object o = Napi::Object::New(env);
      if (r.err) {
        o.Set("errno", Napi::Number::New(env, r.err));
        o.Set("syscall", Napi::String::New(env, r.syscall));
        o.Set("message", Napi::String::New(env, std::string(r.syscall) + ": " + strerror(r.err)));
      } else {
        o.Set("key", Napi::Number::New(env, static_cast<double>(static_cast<int32_t>(r.ds.shm_perm.__key))));
        o.Set("size", Napi::Number::New(env, static_cast<double>(r.ds.shm_segsz)));
        o.Set("chunks", Napi::Buffer<uint8_t>::Copy(env, r.table.data(), r.table.size()));
        o.Set("dataChunks", Napi::Number::New(env, static_cast<double>(r.dataChunks)));
        o.Set("zeroChunks", Napi::Number::New(env, static_cast<double>(r.zeroChunks)));
        o.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(r.bytesWritten)));
        o.Set("offset", Napi::Number::New(env, static_cast<double>(r.offset)));
      }
      list.Set(static_cast<uint32_t>(i), o);
    }
    return list;
  }

 private:
  struct Out {
    struct shmid_ds ds {};
    std::vector<uint8_t> table;
    uint64_t dataChunks = 0, zeroChunks = 0, bytesWritten = 0, offset = 0;
    const char* syscall = "";
    int err = 0;
  };

  void SaveOne(const Segment& s, Out& o, AlignedBuffer& buf, uint64_t page, uint64_t& end) {
    auto fail = [&o](const char* syscall, int err) {
      o.syscall = syscall;
      o.err = err;
    };
    Attachment seg;
    {
      ThreadIdentity as(s.uid, s.gid);
      if (as.error()) return fail(as.failedSyscall(), as.error());
      if (shmctl(s.id, IPC_STAT, &o.ds) != 0) return fail("shmctl", errno);
      // Another segment under this id now (src/ tells from the stat): not read.
      if (o.ds.shm_segsz != s.size) return;
      void* a = shmat(s.id, nullptr, SHM_RDONLY);
      if (a == reinterpret_cast<void*>(-1)) return fail("shmat", errno);
      seg.addr = a;
    }
    // At most 16 pages. Every one resident (the common case): all data, read
    // them, nothing else to ask. Else where telling holes needs the swap
    // column (one read of /proc/sysvipc/shm per segment), read them all
    // instead (a hole then costs a page, at most 64 KiB a segment).
    const uint64_t pages = (s.size + page - 1) / page;
    Holes holes = holes_ == Holes::kMincoreSwapCheck ? Holes::kRead : holes_;
    if (holes != Holes::kRead) {
      vec_.resize(pages);
      if (mincore(seg.addr, pages * page, vec_.data()) == 0 &&
          std::all_of(vec_.begin(), vec_.end(), [](unsigned char v) { return (v & 1) != 0; })) {
        holes = Holes::kRead;
      }
    }
    Fd mapFd;
    if (holes == Holes::kMapFiles) {
      int fd = OpenMapFiles(seg.addr, (s.size + page - 1) / page * page);
      if (fd < 0) return fail("open", -fd);
      mapFd.fd = fd;
    }
    SegmentReader reader(seg, s.id, page, holes, mapFd.fd);
    const uint64_t chunks = ChunkCount(s.size, chunkSize_);
    o.table.resize(chunks * kEntry);
    o.offset = end;
    for (uint64_t c = 0; c < chunks; c++) {
      const uint64_t off = c * chunkSize_;
      const size_t len = ChunkLength(c, s.size, chunkSize_);
      ChunkDigest d(true);
      std::vector<Run> runs;
      if (int err = reader.Read(off, len, buf.data() + off, d, runs)) return fail(reader.failedSyscall(), err);
      if (d.zero()) {
        PutEntry(&o.table[c * kEntry], Crc32cZeros(0, len), kZero);
        o.zeroChunks++;
        continue;
      }
      PutEntry(&o.table[c * kEntry], d.crc(), kData);
      o.dataChunks++;
      for (const Run& r : runs) {
        if (int err = WriteAll(fd_, buf.data() + off + r.start, r.len, o.offset + off + r.start)) return fail("pwrite", err);
        o.bytesWritten += r.len;
      }
    }
    // The next segment starts on a page of its own (pack.data can be mapped).
    if (o.dataChunks) end = o.offset + (s.size + 4095) / 4096 * 4096;
    else o.offset = 0;
  }

  const int fd_;
  const uint64_t offset_, chunkSize_;
  const Holes holes_;
  std::vector<Segment> segs_;
  std::vector<Out> out_;
  std::vector<unsigned char> vec_;
};

}  // namespace

Napi::Value SavePacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  if (I64(o.Get("chunkSize")) <= 0) return Rejected(env, Napi::RangeError::New(env, "chunkSize must be positive"));
  if (!o.Get("segments").IsArray()) return Rejected(env, Napi::TypeError::New(env, "segments must be an array"));
  return (new SavePackedWorker(env, o))->Start();
}

Napi::Value SaveSegment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  if (I64(o.Get("chunkSize")) <= 0) return Rejected(env, Napi::RangeError::New(env, "chunkSize must be positive"));
  return (new SaveWorker(env, o))->Start();
}

}  // namespace shmkeep
