// Segment <-> file copies with a chunk table, on libuv's thread pool.
//
// Chunk table: 8 bytes per chunk: u32 LE CRC-32C of the chunk's bytes, u8 type
// (0 = ZERO: all bytes zero, a hole in the data file; 1 = DATA), 3 zero bytes.
// Chunk i covers [i * chunkSize, min(size, (i + 1) * chunkSize)).
//
// Each operation is an AsyncWorker that settles a promise: Execute() does only
// system calls and byte loops, OnOK() builds the JS result or the rejection.
// The policy (file names, chunk size, what to do with bad chunks or a partial
// file) is src/'s.
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "crc32c.h"
#include "region.h"

// XXH3-128 (BSD-2-Clause, vendored from xxHash 0.8.1): the 128-bit hash that
// decides "unchanged since the previous generation". CRC-32C alone would carry
// stale data over once in 2^32 changed chunks; it stays for corruption.
#define XXH_INLINE_ALL
#include "vendor/xxhash.h"

namespace shmkeep {
namespace {

constexpr int kMadvPopulateRead = 22;   // MADV_POPULATE_READ, Linux >= 5.14
constexpr int kMadvPopulateWrite = 23;  // MADV_POPULATE_WRITE, Linux >= 5.14
constexpr size_t kMaxIo = size_t{64} << 20;      // one pwrite at most
constexpr size_t kVerifyBuffer = size_t{256} << 10;  // verifyFile reads: small enough to CRC while cache-hot
constexpr size_t kRestorePiece = size_t{256} << 10;  // restore reads, each CRC'd while cache-hot
constexpr size_t kEntry = 8;
constexpr size_t kHash = 16;  // XXH3-128 per chunk, little-endian low then high

// A byte range [start, start + len) of a chunk.
struct Run {
  size_t start;
  size_t len;
};

// The data runs of [off, off + len) of a file, relative to off: holes
// (SEEK_HOLE) left out. A file system without SEEK_DATA reports one run.
std::vector<Run> FileDataRuns(int fd, uint64_t off, size_t len) {
  std::vector<Run> runs;
  const uint64_t end = off + len;
  for (uint64_t pos = off; pos < end;) {
    off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole from here to EOF
      runs.push_back({static_cast<size_t>(pos - off), static_cast<size_t>(end - pos)});  // cannot tell: read the rest
      break;
    }
    if (static_cast<uint64_t>(data) >= end) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    uint64_t stop = hole < 0 ? end : std::min<uint64_t>(end, static_cast<uint64_t>(hole));
    runs.push_back({static_cast<size_t>(data - static_cast<off_t>(off)), static_cast<size_t>(stop - data)});
    pos = stop;
  }
  return runs;
}
constexpr uint8_t kZero = 0;
constexpr uint8_t kData = 1;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  // close() whose error counts (the last chance to hear of a failed write).
  int Close() {
    int rc = close(fd);
    fd = -1;
    return rc == 0 ? 0 : errno;
  }
};

struct Attachment {
  void* addr = nullptr;
  ~Attachment() {
    if (addr) shmdt(addr);
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(addr); }
};

struct AlignedBuffer {
  void* p = nullptr;
  ~AlignedBuffer() { free(p); }
};

uint64_t ChunkCount(uint64_t size, uint64_t chunkSize) { return size / chunkSize + (size % chunkSize != 0); }

bool IsZero(const uint8_t* p, size_t n) {
  // Blocks of 256 bytes OR-ed together (the compiler vectorizes the inner
  // loop), so a non-zero byte is found within a block of where it is.
  for (; n >= 256; p += 256, n -= 256) {
    uint64_t acc = 0;
    for (size_t i = 0; i < 256; i += 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      acc |= w;
    }
    if (acc) return false;
  }
  for (; n; n--) {
    if (*p++) return false;
  }
  return true;
}

void PutEntry(uint8_t* e, uint32_t crc, uint8_t type) {
  e[0] = static_cast<uint8_t>(crc);
  e[1] = static_cast<uint8_t>(crc >> 8);
  e[2] = static_cast<uint8_t>(crc >> 16);
  e[3] = static_cast<uint8_t>(crc >> 24);
  e[4] = type;
  e[5] = e[6] = e[7] = 0;
}

uint32_t EntryCrc(const uint8_t* e) {
  return static_cast<uint32_t>(e[0]) | static_cast<uint32_t>(e[1]) << 8 | static_cast<uint32_t>(e[2]) << 16 |
         static_cast<uint32_t>(e[3]) << 24;
}

// MADV_POPULATE_*: fault the range in up front. A kernel without it (< 5.14:
// EINVAL) or a mapping it does not apply to is fine, we then fault as we go.
// EFAULT/ENOMEM/EHWPOISON mean that touching the memory would raise SIGBUS
// (e.g. an empty hugetlb pool) or go out of memory: returns that errno so the
// caller stops before it touches the range; 0 otherwise.
int Populate(void* addr, size_t len, int advice) {
  while (madvise(addr, len, advice) != 0) {
    if (errno == EINTR) continue;
    if (errno == EFAULT || errno == ENOMEM || errno == EHWPOISON) return errno;
    return 0;
  }
  return 0;
}

// Drop our page-table entries for a range of a shared mapping: the segment
// keeps its pages, our resident set stays bounded. A hint: failures (e.g. a
// hugetlb range not aligned to its page size) only cost memory.
void DropMapping(void* addr, size_t len) { madvise(addr, len, MADV_DONTNEED); }

int WriteAll(int fd, const uint8_t* p, size_t n, uint64_t offset) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, std::min(n, kMaxIo), static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return 0;
}

// pread until n bytes or end of file. Returns bytes read, or -errno.
int64_t ReadFull(int fd, uint8_t* p, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, p + done, std::min(n - done, kMaxIo), static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<int64_t>(done);
}

// KernelPageSize of the mapping starting at addr, from /proc/self/smaps, in
// bytes; 0 when not found. Tells a hugetlb attachment from a normal one.
uint64_t KernelPageSize(const void* addr) {
  Fd f{open("/proc/self/smaps", O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return 0;
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t r = read(f.fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
  }
  const uintptr_t want = reinterpret_cast<uintptr_t>(addr);
  static const char kField[] = "KernelPageSize:";
  bool ours = false;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    // A mapping's header starts "start-end perms ...", start in lower-case hex;
    // the fields under it start with a capitalized "Name:".
    uintptr_t start = 0;
    size_t i = pos;
    for (; i < eol; i++) {
      char c = text[i];
      if (c >= '0' && c <= '9') start = start << 4 | static_cast<uintptr_t>(c - '0');
      else if (c >= 'a' && c <= 'f') start = start << 4 | static_cast<uintptr_t>(c - 'a' + 10);
      else break;
    }
    if (i > pos && i < eol && text[i] == '-') {
      ours = start == want;
    } else if (ours && text.compare(pos, sizeof kField - 1, kField) == 0) {
      uint64_t kb = 0;
      for (i = pos + sizeof kField - 1; i < eol && text[i] == ' '; i++) {
      }
      for (; i < eol && text[i] >= '0' && text[i] <= '9'; i++) kb = kb * 10 + static_cast<uint64_t>(text[i] - '0');
      return kb * 1024;
    }
    pos = eol + 1;
  }
  return 0;
}

// Base of the three workers: the promise, and how the work failed.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual Napi::Value Result(Napi::Env env) = 0;

  // The first failure wins; Execute returns right after.
  void Fail(const char* syscall, int err) {
    if (err_ == 0) {
      syscall_ = syscall;
      err_ = err;
    }
  }

  // A failure that is no errno: an Error with this message, code and numbers.
  void FailWith(std::string message, const char* code, std::vector<std::pair<const char*, double>> props) {
    if (err_ == 0 && code_ == nullptr) {
      message_ = std::move(message);
      code_ = code;
      props_ = std::move(props);
    }
  }

  // open + fstat + size check of a data file we read (restore, verify).
  // O_NONBLOCK: a FIFO at the path must not hang the worker in open().
  bool OpenForRead(const std::string& path, uint64_t size, Fd& file) {
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

  void OnOK() override {
    Napi::Env env = Env();
    try {
      if (err_ != 0) {
        deferred_.Reject(ErrnoError(env, syscall_, err_).Value());
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

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Napi::Value BadChunksResult(Napi::Env env, const std::vector<uint64_t>& bad, uint64_t bytesRead) {
    Napi::Array list = Napi::Array::New(env, bad.size());
    for (size_t i = 0; i < bad.size(); i++) list.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(bad[i])));
    Napi::Object o = Napi::Object::New(env);
    o.Set("badChunks", list);
    o.Set("bytesRead", Napi::Number::New(env, static_cast<double>(bytesRead)));
    return o;
  }

 private:
  Napi::Promise::Deferred deferred_;
  const char* syscall_ = "";
  int err_ = 0;
  std::string message_;
  const char* code_ = nullptr;
  std::vector<std::pair<const char*, double>> props_;
};

// An already-settled promise for argument errors found on the JS thread.
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

bool PathGiven(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

// The chunk table of restore/verify, checked against size/chunkSize and
// copied (the worker must not read a JS Buffer the program may change).
// Returns false after having set *rejection.
bool TakeTable(Napi::Env env, const Napi::Object& o, uint64_t size, uint64_t chunkSize, std::vector<uint8_t>& table,
               Napi::Value* rejection) {
  Napi::Value v = o.Get("chunks");
  if (!v.IsTypedArray()) {
    *rejection = TableError(env, "chunks must be a Buffer");
    return false;
  }
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  size_t bytes = t.ByteLength();
  uint64_t expected = ChunkCount(size, chunkSize) * kEntry;
  if (bytes != expected) {
    *rejection = TableError(env, "the chunk table has " + std::to_string(bytes) + " bytes; " + std::to_string(size) +
                                     " bytes in chunks of " + std::to_string(chunkSize) + " need " +
                                     std::to_string(expected));
    return false;
  }
  const uint8_t* data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  table.assign(data, data + bytes);
  for (size_t i = 0; i < bytes; i += kEntry) {
    if (table[i + 4] != kZero && table[i + 4] != kData) {
      *rejection = TableError(env, "chunk " + std::to_string(i / kEntry) + " has the unknown type " +
                                       std::to_string(table[i + 4]));
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// saveSegment({id, uid, gid, path, chunkSize, skipAbsent, fsync, fd?, previous?})
// Also hashes every DATA chunk with XXH3-128 (16 bytes per chunk, zeros for
// ZERO chunks). With previous = {chunks, hashes} of the same segment in the
// previous generation, a first pass compares without writing anything: when
// every chunk is as it was, the result says unchanged (and carries the
// previous tables) and no file is opened or written.
// With fd (an open, empty file of the caller's), writes there and leaves it
// open: the caller fsyncs that same descriptor later. A descriptor opened
// after a failed write-back would not hear of the error.

class SaveWorker : public Job {
 public:
  SaveWorker(Napi::Env env, const Napi::Object& o)
      : Job(env, "shmkeep.saveSegment"),
        id_(I32(o.Get("id"))),
        uid_(I64(o.Get("uid"))),
        gid_(I64(o.Get("gid"))),
        toFile_(PathGiven(o.Get("path"))),
        path_(toFile_ ? o.Get("path").As<Napi::String>().Utf8Value() : std::string()),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        skipAbsent_(o.Get("skipAbsent").ToBoolean()),
        fsync_(o.Get("fsync").ToBoolean()),
        callerFd_(o.Get("fd").IsNumber() ? I32(o.Get("fd")) : -1),
        carryUnchanged_(o.Get("carryUnchanged").ToBoolean()) {
    Napi::Value prev = o.Get("previous");
    if (prev.IsObject()) {
      Napi::Value t = prev.As<Napi::Object>().Get("chunks"), h = prev.As<Napi::Object>().Get("hashes");
      if (t.IsTypedArray() && h.IsTypedArray()) {
        prevTable_ = Bytes(t.As<Napi::TypedArray>());
        prevHashes_ = Bytes(h.As<Napi::TypedArray>());
      }
    }
  }

  void Execute() override {
    Attachment seg;
    {
      // IPC_STAT before shmat: the stat is the segment as its users left it
      // (nattch without us, their atime and lpid).
      ThreadIdentity as(uid_, gid_);
      if (as.error()) return Fail(as.failedSyscall(), as.error());
      if (shmctl(id_, IPC_STAT, &ds_) != 0) return Fail("shmctl", errno);
      void* a = shmat(id_, nullptr, SHM_RDONLY);
      if (a == reinterpret_cast<void*>(-1)) return Fail("shmat", errno);
      seg.addr = a;
    }
    const uint64_t size = ds_.shm_segsz;
    kernelPageSize_ = KernelPageSize(seg.addr);
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    // mincore() tells whether the segment has a page only for normal (shmem)
    // segments, where it looks the page up in the segment's page cache. For
    // a hugetlb segment it only sees our own page tables, which are empty:
    // every chunk would look absent. There (or when smaps did not say) read
    // every chunk.
    const bool skipAbsent = skipAbsent_ && kernelPageSize_ == page;
    const uint64_t chunks = ChunkCount(size, chunkSize_);
    std::vector<unsigned char> resident;
    if (skipAbsent) resident.resize((std::min(chunkSize_, size) + page - 1) / page);

    const bool hasPrev = prevTable_.size() == chunks * kEntry && prevHashes_.size() == chunks * kHash;
    // carryUnchanged (a frozen app's checkpoint): one pass that writes only
    // changed chunks; the caller copies the others from the previous file
    // after the app is resumed. Otherwise a first pass decides "unchanged".
    const bool carry = hasPrev && carryUnchanged_;
    carry_ = carry;
    if (carry) carried_.assign(chunks, 0);
    if (hasPrev && !carry && SameAsPrevious(seg.bytes(), size, chunks, page, skipAbsent, resident)) {
      unchanged_ = true;
      table_ = prevTable_;
      hashes_ = prevHashes_;
      for (uint64_t i = 0; i < chunks; i++) (table_[i * kEntry + 4] == kZero ? zeroChunks_ : dataChunks_)++;
      return;
    }

    Fd file;
    int out = callerFd_;
    if (out < 0 && toFile_) {
      file.fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (file.fd < 0) return Fail("open", errno);
      out = file.fd;
    }
    if (out >= 0 && ftruncate(out, static_cast<off_t>(size)) != 0) return Fail("ftruncate", errno);

    table_.resize(chunks * kEntry);
    hashes_.assign(chunks * kHash, 0);
    const uint64_t lastLen = chunks ? size - (chunks - 1) * chunkSize_ : 0;
    const uint32_t zeroFull = Crc32cZeros(0, chunkSize_);
    const uint32_t zeroLast = Crc32cZeros(0, lastLen);

    for (uint64_t i = 0; i < chunks; i++) {
      const uint64_t off = i * chunkSize_;
      const size_t len = static_cast<size_t>(i + 1 == chunks ? lastLen : chunkSize_);
      const uint32_t zeroCrc = i + 1 == chunks ? zeroLast : zeroFull;
      uint8_t* p = seg.bytes() + off;
      uint8_t* entry = &table_[i * kEntry];
      const Residency r = skipAbsent ? Resident(p, len, page, resident) : Residency::kAll;
      if (r == Residency::kNone) {
        // No page of the chunk was ever written, or (mincore cannot tell
        // them apart) every page of it is swapped out: src/ decides when to
        // ask, absentChunks says how many chunks this answer made ZERO.
        if (carry && prevTable_[i * kEntry + 4] != kZero) allCarried_ = false;
        PutEntry(entry, zeroCrc, kZero);
        zeroChunks_++;
        absentChunks_++;
        continue;
      }
      // Runs of pages to read: the whole chunk, or (some pages never
      // touched) only the resident ones; the others are zeros that we
      // neither read (it would allocate them) nor write (holes in the file).
      std::vector<Run> runs = r == Residency::kAll ? std::vector<Run>{{0, len}} : ResidentRuns(len, page, resident);
      Digest d;
      const bool prevData = carry && prevTable_[i * kEntry + 4] == kData;
      if (int err = DigestRuns(p, len, runs, d, prevData ? &prevHashes_[i * kHash] : nullptr)) return Fail("madvise", err);
      if (d.same) {
        // As in the previous generation: its bytes come from the previous
        // file later (copyCarried); the entry is the previous one.
        memcpy(entry, &prevTable_[i * kEntry], kEntry);
        memcpy(&hashes_[i * kHash], &prevHashes_[i * kHash], kHash);
        carried_[i] = 1;
        carriedChunks_++;
        dataChunks_++;
      } else if (d.zero) {
        PutEntry(entry, d.crc, kZero);
        zeroChunks_++;
        if (carry && prevTable_[i * kEntry + 4] != kZero) allCarried_ = false;
      } else {
        allCarried_ = false;
        for (const Run& run : runs) {
          if (out >= 0) {
            if (int err = WriteAll(out, p + run.start, run.len, off + run.start)) return Fail("pwrite", err);
          }
          bytesWritten_ += run.len;
        }
        PutEntry(entry, d.crc, kData);
        PutHash(&hashes_[i * kHash], d.hash);
        dataChunks_++;
      }
      for (const Run& run : runs) DropMapping(p + run.start, run.len);
    }

    if (out >= 0 && fsync_ && fsync(out) != 0) return Fail("fsync", errno);
    if (file.fd >= 0) {
      if (int err = file.Close()) return Fail("close", err);
    }
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("chunks", Napi::Buffer<uint8_t>::Copy(env, table_.data(), table_.size()));
    o.Set("stat", ShmStatObject(env, id_, ds_));
    o.Set("kernelPageSize", Napi::Number::New(env, static_cast<double>(kernelPageSize_)));
    o.Set("bytesWritten", Napi::Number::New(env, static_cast<double>(bytesWritten_)));
    o.Set("dataChunks", Napi::Number::New(env, static_cast<double>(dataChunks_)));
    o.Set("zeroChunks", Napi::Number::New(env, static_cast<double>(zeroChunks_)));
    o.Set("absentChunks", Napi::Number::New(env, static_cast<double>(absentChunks_)));
    o.Set("hashes", Napi::Buffer<uint8_t>::Copy(env, hashes_.data(), hashes_.size()));
    o.Set("unchanged", Napi::Boolean::New(env, unchanged_ || (carry_ && allCarried_)));
    o.Set("carried", Napi::Buffer<uint8_t>::Copy(env, carried_.data(), carried_.size()));
    o.Set("carriedChunks", Napi::Number::New(env, static_cast<double>(carriedChunks_)));
    return o;
  }

 private:
  static std::vector<uint8_t> Bytes(const Napi::TypedArray& t) {
    const uint8_t* d = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    return std::vector<uint8_t>(d, d + t.ByteLength());
  }

  static void PutHash(uint8_t* out, XXH128_hash_t h) {
    for (int b = 0; b < 8; b++) out[b] = static_cast<uint8_t>(h.low64 >> (8 * b));
    for (int b = 0; b < 8; b++) out[8 + b] = static_cast<uint8_t>(h.high64 >> (8 * b));
  }

  // The first pass of an incremental save: every chunk as in the previous
  // generation? Reads (never-touched chunks are not read, as in a save) and
  // hashes, writes nothing, and stops at the first difference.
  bool SameAsPrevious(uint8_t* base, uint64_t size, uint64_t chunks, uint64_t page, bool skipAbsent,
                      std::vector<unsigned char>& resident) {
    for (uint64_t i = 0; i < chunks; i++) {
      const uint64_t off = i * chunkSize_;
      const size_t len = static_cast<size_t>(std::min(chunkSize_, size - off));
      uint8_t* p = base + off;
      const bool wasZero = prevTable_[i * kEntry + 4] == kZero;
      const Residency r = skipAbsent ? Resident(p, len, page, resident) : Residency::kAll;
      if (r == Residency::kNone) {
        if (!wasZero) return false;
        continue;
      }
      std::vector<Run> runs = r == Residency::kAll ? std::vector<Run>{{0, len}} : ResidentRuns(len, page, resident);
      Digest d;
      if (DigestRuns(p, len, runs, d, wasZero ? nullptr : &prevHashes_[i * kHash]) != 0) return false;  // the full save reports it
      for (const Run& run : runs) DropMapping(p + run.start, run.len);
      if (!(wasZero ? d.zero : d.same)) return false;
    }
    return true;
  }

  enum class Residency { kNone, kSome, kAll };

  // Which pages of [p, p + len) mincore() finds in the segment's memory (vec
  // is filled, one byte per page). When mincore fails we cannot know: say
  // all, and read the chunk.
  static Residency Resident(uint8_t* p, size_t len, size_t page, std::vector<unsigned char>& vec) {
    if (mincore(p, len, vec.data()) != 0) return Residency::kAll;
    size_t pages = (len + page - 1) / page, n = 0;
    for (size_t k = 0; k < pages; k++) n += vec[k] & 1;
    return n == 0 ? Residency::kNone : n == pages ? Residency::kAll : Residency::kSome;
  }

  // Runs of resident pages, as byte ranges of the chunk.
  static std::vector<Run> ResidentRuns(size_t len, size_t page, const std::vector<unsigned char>& vec) {
    std::vector<Run> runs;
    size_t pages = (len + page - 1) / page;
    for (size_t k = 0; k < pages;) {
      if (!(vec[k] & 1)) { k++; continue; }
      size_t j = k;
      while (j < pages && (vec[j] & 1)) j++;
      size_t start = k * page, end = std::min(len, j * page);
      runs.push_back({start, end - start});
      k = j;
    }
    return runs;
  }

  struct Digest {
    uint32_t crc = 0;
    XXH128_hash_t hash{};
    bool zero = true;
    bool same = false;  // the hash equals the previous one given
  };

  // XXH3-128, then CRC-32C and all-zero, of a chunk whose bytes outside
  // `runs` are zeros that must not be touched (for those, the CRC is computed
  // without reading, and the hash reads a zero page of ours). Populates each
  // run first. When the hash equals `prevHash` the chunk is as it was: the CRC
  // is the previous one, and is not computed (d.same).
  static int DigestRuns(uint8_t* p, size_t len, const std::vector<Run>& runs, Digest& d, const uint8_t* prevHash = nullptr) {
    static const uint8_t zeros[4096] = {};
    XXH3_state_t state;
    XXH3_128bits_reset(&state);
    size_t pos = 0;
    auto zerosTo = [&](size_t end) {
      for (; pos < end; pos += std::min(sizeof zeros, end - pos)) XXH3_128bits_update(&state, zeros, std::min(sizeof zeros, end - pos));
    };
    for (const Run& run : runs) {
      zerosTo(run.start);
      if (int err = Populate(p + run.start, run.len, kMadvPopulateRead)) return err;
      XXH3_128bits_update(&state, p + run.start, run.len);
      pos = run.start + run.len;
    }
    zerosTo(len);
    d.hash = XXH3_128bits_digest(&state);
    if (prevHash) {
      uint8_t h[kHash];
      PutHash(h, d.hash);
      if (memcmp(h, prevHash, kHash) == 0) {
        d.same = true;
        d.zero = false;
        return 0;
      }
    }
    size_t at = 0;
    for (const Run& run : runs) {
      d.crc = Crc32cZeros(d.crc, run.start - at);
      d.crc = Crc32c(d.crc, p + run.start, run.len);
      at = run.start + run.len;
    }
    d.crc = Crc32cZeros(d.crc, len - at);
    // All zero only if the CRC says it may be; then make sure.
    d.zero = d.crc == Crc32cZeros(0, len);
    for (const Run& run : runs) {
      if (!d.zero) break;
      d.zero = IsZero(p + run.start, run.len);
    }
    return 0;
  }

  const int id_;
  const int64_t uid_, gid_;
  const bool toFile_;
  const std::string path_;
  const uint64_t chunkSize_;
  const bool skipAbsent_, fsync_;
  const int callerFd_;
  struct shmid_ds ds_ {};
  std::vector<uint8_t> table_, hashes_, prevTable_, prevHashes_, carried_;
  const bool carryUnchanged_;
  bool carry_ = false, allCarried_ = true;
  uint64_t carriedChunks_ = 0;
  bool unchanged_ = false;
  uint64_t kernelPageSize_ = 0;
  uint64_t bytesWritten_ = 0, dataChunks_ = 0, zeroChunks_ = 0, absentChunks_ = 0;
};

Napi::Value SaveSegment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  if (I64(o.Get("chunkSize")) <= 0) return Rejected(env, Napi::RangeError::New(env, "chunkSize must be positive"));
  auto* w = new SaveWorker(env, o);
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

// ---------------------------------------------------------------------------
// restoreSegment({id, uid, gid, path, size, chunkSize, chunks, stopAtFirstBad})

class RestoreWorker : public Job {
 public:
  RestoreWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table)
      : Job(env, "shmkeep.restoreSegment"),
        id_(I32(o.Get("id"))),
        uid_(I64(o.Get("uid"))),
        gid_(I64(o.Get("gid"))),
        path_(o.Get("path").As<Napi::String>().Utf8Value()),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        stopAtFirstBad_(o.Get("stopAtFirstBad").ToBoolean()),
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

    const uint64_t chunks = ChunkCount(size_, chunkSize_);
    for (uint64_t i = 0; i < chunks; i++) {
      const uint64_t off = i * chunkSize_;
      const size_t len = static_cast<size_t>(std::min(chunkSize_, size_ - off));
      const uint8_t* entry = &table_[i * kEntry];
      bool good;
      if (entry[4] == kZero) {
        // A fresh segment is zero already: leave its memory untouched. The
        // entry's CRC must still be the CRC of zeros.
        good = EntryCrc(entry) == Crc32cZeros(0, len);
      } else {
        // Only the file's data runs are read into the segment: its holes
        // (pages the app never touched) stay untouched zeros in the new
        // segment too, and count in the CRC without being read.
        uint8_t* p = seg.bytes() + off;
        uint32_t crc = 0;
        uint64_t pos = off;
        good = true;
        for (const Run& run : FileDataRuns(file.fd, off, len)) {
          crc = Crc32cZeros(crc, off + run.start - pos);
          uint8_t* q = p + run.start;
          if (int err = Populate(q, run.len, kMadvPopulateWrite)) return Fail("madvise", err);
          // Read in pieces small enough to still be in the CPU cache when
          // the CRC reads them: one trip through memory instead of two.
          for (size_t at = 0; at < run.len;) {
            size_t want = std::min(kRestorePiece, run.len - at);
            int64_t got = ReadFull(file.fd, q + at, want, off + run.start + at);
            if (got < 0) return Fail("pread", static_cast<int>(-got));
            bytesRead_ += static_cast<uint64_t>(got);
            crc = Crc32c(crc, q + at, static_cast<size_t>(got));
            if (static_cast<size_t>(got) != want) {
              good = false;
              break;
            }
            at += want;
          }
          DropMapping(q, run.len);
          pos = off + run.start + run.len;
        }
        crc = Crc32cZeros(crc, off + len - pos);
        good = good && crc == EntryCrc(entry);
        posix_fadvise(file.fd, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
      }
      if (!good) {
        bad_.push_back(i);
        if (stopAtFirstBad_) break;
      }
    }
    // Read-only: close's error tells nothing about the data.
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return BadChunksResult(env, bad_, bytesRead_); }

 private:
  const int id_;
  const int64_t uid_, gid_;
  const std::string path_;
  const uint64_t size_, chunkSize_;
  const bool stopAtFirstBad_;
  const std::vector<uint8_t> table_;
  std::vector<uint64_t> bad_;
  uint64_t bytesRead_ = 0;
};

// size/chunkSize/chunks of restore and verify; false with *rejection set.
bool CheckGeometry(Napi::Env env, const Napi::Object& o, std::vector<uint8_t>& table, Napi::Value* rejection) {
  int64_t size = I64(o.Get("size"));
  int64_t chunkSize = I64(o.Get("chunkSize"));
  if (size < 0 || chunkSize <= 0) {
    *rejection = Rejected(env, Napi::RangeError::New(env, "size must be >= 0 and chunkSize > 0"));
    return false;
  }
  return TakeTable(env, o, static_cast<uint64_t>(size), static_cast<uint64_t>(chunkSize), table, rejection);
}

Napi::Value RestoreSegment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<uint8_t> table;
  Napi::Value rejection;
  if (!CheckGeometry(env, o, table, &rejection)) return rejection;
  auto* w = new RestoreWorker(env, o, std::move(table));
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

// ---------------------------------------------------------------------------
// verifyFile({path, size, chunkSize, chunks})

class VerifyWorker : public Job {
 public:
  VerifyWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table)
      : Job(env, "shmkeep.verifyFile"),
        path_(o.Get("path").As<Napi::String>().Utf8Value()),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        table_(std::move(table)) {}

  void Execute() override {
    Fd file;
    if (!OpenForRead(path_, size_, file)) return;
    const size_t bufSize = static_cast<size_t>((std::min<uint64_t>(chunkSize_, kVerifyBuffer) + 4095) & ~uint64_t{4095});
    AlignedBuffer buf;
    if (int err = posix_memalign(&buf.p, 4096, bufSize)) return Fail("posix_memalign", err);
    uint8_t* b = static_cast<uint8_t*>(buf.p);

    const uint64_t chunks = ChunkCount(size_, chunkSize_);
    for (uint64_t i = 0; i < chunks; i++) {
      const uint64_t off = i * chunkSize_;
      const uint64_t end = off + std::min(chunkSize_, size_ - off);
      const uint8_t* entry = &table_[i * kEntry];
      int verdict;  // 1 good, 0 bad, -1 failed (Fail was called)
      if (entry[4] == kZero) {
        verdict = EntryCrc(entry) == Crc32cZeros(0, end - off) ? ZeroRange(file.fd, off, end, b, bufSize) : 0;
      } else {
        uint32_t crc = 0;
        verdict = ReadRange(file.fd, off, end, b, bufSize, [&crc](const uint8_t* p, size_t n) {
          crc = Crc32c(crc, p, n);
          return true;
        });
        if (verdict == 1 && crc != EntryCrc(entry)) verdict = 0;
      }
      if (verdict < 0) return;
      if (verdict == 0) bad_.push_back(i);
      posix_fadvise(file.fd, static_cast<off_t>(off), static_cast<off_t>(end - off), POSIX_FADV_DONTNEED);
    }
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return BadChunksResult(env, bad_, bytesRead_); }

 private:
  // Read [from, to) piece by piece into buf and hand each piece to fn, which
  // returns false to stop. 1: all read and accepted, 0: short (end of file) or
  // refused, -1: a read error (Fail called).
  template <typename Fn>
  int ReadRange(int fd, uint64_t from, uint64_t to, uint8_t* buf, size_t bufSize, Fn fn) {
    for (uint64_t pos = from; pos < to;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(bufSize, to - pos));
      int64_t got = ReadFull(fd, buf, want, pos);
      if (got < 0) return Fail("pread", static_cast<int>(-got)), -1;
      bytesRead_ += static_cast<uint64_t>(got);
      if (!fn(buf, static_cast<size_t>(got)) || static_cast<size_t>(got) < want) return 0;
      pos += want;
    }
    return 1;
  }

  // A ZERO chunk: holes are fine; whatever data the file has there must be
  // zero bytes. 1 good, 0 bad, -1 failed.
  int ZeroRange(int fd, uint64_t from, uint64_t to, uint8_t* buf, size_t bufSize) {
    for (uint64_t pos = from; pos < to;) {
      off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) return 1;  // no data from pos to the end of the file
        return Fail("lseek", errno), -1;
      }
      if (static_cast<uint64_t>(data) >= to) return 1;
      off_t hole = lseek(fd, data, SEEK_HOLE);
      if (hole < 0) return Fail("lseek", errno), -1;
      uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), to);
      int r = ReadRange(fd, static_cast<uint64_t>(data), stop, buf, bufSize,
                        [](const uint8_t* p, size_t n) { return IsZero(p, n); });
      if (r != 1) return r;
      pos = stop;
    }
    return 1;
  }

  const std::string path_;
  const uint64_t size_, chunkSize_;
  const std::vector<uint8_t> table_;
  std::vector<uint64_t> bad_;
  uint64_t bytesRead_ = 0;
};

Napi::Value VerifyFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  std::vector<uint8_t> table;
  Napi::Value rejection;
  if (!CheckGeometry(env, o, table, &rejection)) return rejection;
  auto* w = new VerifyWorker(env, o, std::move(table));
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

// ---------------------------------------------------------------------------

// crc32c(buf, seed = 0) -> number, on the JS thread: for small metadata.
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "crc32c expects a Uint8Array");
  Napi::TypedArray t = info[0].As<Napi::TypedArray>();
  uint32_t seed = info.Length() > 1 && !info[1].IsUndefined() ? U32(info[1]) : 0;
  size_t n = t.ByteLength();
  const uint8_t* data = n ? static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset() : nullptr;
  return Napi::Number::New(env, Crc32c(seed, data, n));
}

Napi::Value Crc32cImplJs(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Crc32cImpl()); }

}  // namespace

// ---------------------------------------------------------------------------
// copyCarried({from, fd, size, chunkSize, chunks, carried}) -> {bytesCopied}
// After a checkpoint's one pass (saveSegment with carryUnchanged): fill the
// chunks marked carried into fd from the previous generation's data file,
// each checked against its CRC on the way (a previous file damaged on disk is
// an error, code EPREV, never copied silently). Holes stay holes.

class CopyCarriedWorker : public Job {
 public:
  CopyCarriedWorker(Napi::Env env, const Napi::Object& o, std::vector<uint8_t> table, std::vector<uint8_t> carried)
      : Job(env, "shmkeep.copyCarried"),
        from_(o.Get("from").As<Napi::String>().Utf8Value()),
        fd_(I32(o.Get("fd"))),
        size_(static_cast<uint64_t>(I64(o.Get("size")))),
        chunkSize_(static_cast<uint64_t>(I64(o.Get("chunkSize")))),
        table_(std::move(table)),
        carried_(std::move(carried)) {}

  void Execute() override {
    Fd file;
    if (!OpenForRead(from_, size_, file)) return;
    const size_t bufSize = static_cast<size_t>((std::min<uint64_t>(chunkSize_, kVerifyBuffer) + 4095) & ~uint64_t{4095});
    AlignedBuffer buf;
    if (int err = posix_memalign(&buf.p, 4096, bufSize)) return Fail("posix_memalign", err);
    uint8_t* b = static_cast<uint8_t*>(buf.p);
    for (uint64_t i = 0; i < carried_.size(); i++) {
      if (!carried_[i]) continue;
      const uint64_t off = i * chunkSize_;
      const size_t len = static_cast<size_t>(std::min(chunkSize_, size_ - off));
      uint32_t crc = 0;
      uint64_t pos = off;
      for (const Run& run : FileDataRuns(file.fd, off, len)) {
        crc = Crc32cZeros(crc, off + run.start - pos);
        for (uint64_t at = off + run.start, end = at + run.len; at < end;) {
          size_t want = static_cast<size_t>(std::min<uint64_t>(bufSize, end - at));
          int64_t got = ReadFull(file.fd, b, want, at);
          if (got < 0) return Fail("pread", static_cast<int>(-got));
          if (static_cast<size_t>(got) != want) return Damaged(i);
          crc = Crc32c(crc, b, want);
          if (int err = WriteAll(fd_, b, want, at)) return Fail("pwrite", err);
          bytesCopied_ += want;
          at += want;
        }
        pos = off + run.start + run.len;
      }
      crc = Crc32cZeros(crc, off + len - pos);
      if (crc != EntryCrc(&table_[i * kEntry])) return Damaged(i);
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

Napi::Value CopyCarried(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  const uint64_t size = static_cast<uint64_t>(I64(o.Get("size")));
  const uint64_t chunkSize = static_cast<uint64_t>(I64(o.Get("chunkSize")));
  if (chunkSize == 0) return Rejected(env, Napi::RangeError::New(env, "chunkSize must be positive"));
  std::vector<uint8_t> table;
  Napi::Value rejection;
  if (!TakeTable(env, o, size, chunkSize, table, &rejection)) return rejection;
  Napi::Value c = o.Get("carried");
  if (!c.IsTypedArray() || c.As<Napi::TypedArray>().ByteLength() != ChunkCount(size, chunkSize)) {
    return TableError(env, "carried must have one byte per chunk");
  }
  Napi::TypedArray t = c.As<Napi::TypedArray>();
  const uint8_t* d = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  auto* w = new CopyCarriedWorker(env, o, std::move(table), std::vector<uint8_t>(d, d + t.ByteLength()));
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

// ---------------------------------------------------------------------------
// checksumMapping(handle, buffer) -> crc: CRC-32C of a Buffer made by
// shm.attach or mmap.map, off the JS thread. The mapping is marked in use
// (busy) meanwhile: a detach then throws EBUSY, and a Buffer collected
// meanwhile is unmapped by the last user, never under the worker's feet.

class ChecksumMappingWorker : public Job {
 public:
  ChecksumMappingWorker(Napi::Env env, RegionRef region, const uint8_t* data, size_t length)
      : Job(env, "shmkeep.checksumMapping"), region_(std::move(region)), data_(data), length_(length) {}

  ~ChecksumMappingWorker() override {
    std::lock_guard<std::mutex> lock(region_->mu);
    if (--region_->busy == 0 && region_->releaseWhenIdle) region_->UnmapLocked();
  }

  void Execute() override { crc_ = Crc32c(0, data_, length_); }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, crc_); }

 private:
  RegionRef region_;
  const uint8_t* data_;
  size_t length_;
  uint32_t crc_ = 0;
};

Napi::Value ChecksumMapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionRef region = RegionFromHandle(info[0]);
  Napi::Buffer<uint8_t> buffer = info[1].As<Napi::Buffer<uint8_t>>();
  {
    std::lock_guard<std::mutex> lock(region->mu);
    if (region->state != Region::State::kMapped) return Rejected(env, ErrnoError(env, "checksum", EBADF));
    region->busy++;
  }
  auto* w = new ChecksumMappingWorker(env, region, buffer.Data(), buffer.Length());
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

void InitCopy(Napi::Env env, Napi::Object exports) {
  exports.Set("checksumMapping", Napi::Function::New(env, ChecksumMapping, "checksumMapping"));
  exports.Set("copyCarried", Napi::Function::New(env, CopyCarried, "copyCarried"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs, "crc32c"));
  exports.Set("crc32cImpl", Napi::Function::New(env, Crc32cImplJs, "crc32cImpl"));
  exports.Set("saveSegment", Napi::Function::New(env, SaveSegment, "saveSegment"));
  exports.Set("restoreSegment", Napi::Function::New(env, RestoreSegment, "restoreSegment"));
  exports.Set("verifyFile", Napi::Function::New(env, VerifyFile, "verifyFile"));
}

}  // namespace shmkeep
