// File I/O of the copy path: descriptors, full reads and writes, a file's data
// runs, buffers aligned for direct I/O, and the write-behind writer that
// overlaps the checksumming of one buffer with the write of the previous.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shmkeep {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  // close() whose error counts (the last chance to hear of a failed write).
  int Close();
};

// A byte range [start, start + len), relative to whatever it is a range of.
struct Run {
  size_t start;
  size_t len;
};

// A buffer of `size` bytes aligned to `align` (a power of two), owned.
// Allocate again to grow it or align it more.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();
  int Allocate(size_t size, size_t align);  // 0 or an errno
  uint8_t* data() const { return p_; }
  size_t size() const { return size_; }

 private:
  uint8_t* p_ = nullptr;
  size_t size_ = 0;
  size_t align_ = 0;
};

constexpr size_t kMaxIo = size_t{64} << 20;  // one pwrite/pread at most

// pwrite all of it (0 or an errno).
int WriteAll(int fd, const uint8_t* p, size_t n, uint64_t offset);
// pread until n bytes or end of file. Returns bytes read, or -errno.
int64_t ReadFull(int fd, uint8_t* p, size_t n, uint64_t offset);

// The data runs of [off, off + len) of a file, relative to off: holes
// (SEEK_HOLE) left out. A file system without SEEK_DATA reports one run.
std::vector<Run> FileDataRuns(int fd, uint64_t off, size_t len);

// The direct-I/O alignment of an open file: statx STATX_DIOALIGN's offset
// and memory alignment, else 4096 for both (a kernel < 6.1 or a file system
// that does not say). Never below 512.
struct DioAlign {
  size_t offset = 4096;
  size_t memory = 4096;
};
DioAlign DirectIoAlignment(int fd);

// Writes buffers' runs into a file on a thread of its own while the callers
// fill their next buffers (several callers may submit: the lanes of one
// save). A buffer handed over by Submit must not change until Wait(buffer)
// returned; each lane alternates two buffers, so it fills one while the
// other is written.
//
// direct: the block-aligned middle of each run goes through a second,
// O_DIRECT descriptor of the same file (no page cache to fill and write
// back); the unaligned ends through the caller's descriptor. O_DIRECT refused
// (EINVAL, at open or at a write) falls back to buffered writes for the rest.
// writeBehind: buffered writes are pushed to the disk as they go
// (sync_file_range), two buffers behind at most, so that the final fsync
// has little left and the page cache does not fill with dirty pages.
// Not threaded: Submit writes at once, on the caller's thread.
class FileWriter {
 public:
  FileWriter(int fd, bool direct, bool writeBehind, bool threaded);
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  ~FileWriter();
  // The alignment buffers handed to Submit should have.
  size_t BufferAlign() const { return align_.memory > 4096 ? align_.memory : 4096; }
  // Queue buf's runs, written at base + run.start. Returns the first error
  // of any write so far (errno; the syscall in failedSyscall()).
  int Submit(const uint8_t* buf, std::vector<Run> runs, uint64_t base);
  // Wait until no write of buf is queued or running (it may be filled
  // again); the first error of any write so far.
  int Wait(const uint8_t* buf);
  // Wait for every write; the first error of any.
  int Finish();
  const char* failedSyscall() const { return syscall_; }
  bool direct() const { return dfd_.fd >= 0; }
  uint64_t bytesWritten() const { return bytes_; }

 private:
  struct Job {
    const uint8_t* buf = nullptr;
    std::vector<Run> runs;
    uint64_t base = 0;
  };
  void Loop();
  bool Holds(const uint8_t* buf) const;  // under mu_
  int Write(const Job& job);
  int WriteRange(const uint8_t* p, size_t n, uint64_t offset);
  void WriteBehind(uint64_t from, uint64_t to);
  void SetError(const char* syscall, int err);

  const int fd_;
  Fd dfd_;
  DioAlign align_;
  const bool writeBehind_;
  const bool threaded_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  const uint8_t* writing_ = nullptr;  // the buffer being written, nullptr when idle
  bool quit_ = false;
  int err_ = 0;
  const char* syscall_ = "";
  uint64_t bytes_ = 0;
  // write-behind: [from, to) of the last two buffers handed to the disk
  uint64_t behind_[2][2] = {{0, 0}, {0, 0}};
};

}  // namespace shmkeep
