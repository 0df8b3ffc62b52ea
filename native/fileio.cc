// File I/O of the copy path (see fileio.h).
#include "fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace shmkeep {

Fd::~Fd() {
  if (fd >= 0) close(fd);
}

int Fd::Close() {
  int rc = close(fd);
  fd = -1;
  return rc == 0 ? 0 : errno;
}

AlignedBuffer::~AlignedBuffer() { free(p_); }

int AlignedBuffer::Allocate(size_t size, size_t align) {
  if (p_ && size_ >= size && align_ >= align) return 0;
  free(p_);
  p_ = nullptr;
  size_ = 0;
  void* p = nullptr;
  if (int err = posix_memalign(&p, align, size ? size : align)) return err;
  p_ = static_cast<uint8_t*>(p);
  size_ = size;
  align_ = align;
  return 0;
}

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

DioAlign DirectIoAlignment(int fd) {
  DioAlign a;
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
      sx.stx_dio_offset_align != 0) {
    a.offset = std::max<size_t>(512, sx.stx_dio_offset_align);
    a.memory = std::max<size_t>(512, sx.stx_dio_mem_align);
  }
#endif
  return a;
}

FileWriter::FileWriter(int fd, bool direct, bool writeBehind, bool threaded)
    : fd_(fd), writeBehind_(writeBehind), threaded_(threaded) {
  if (direct) {
    // A second open file description of the same file, with O_DIRECT: the
    // caller's descriptor keeps its flags (it is fsynced and written
    // buffered later). A file system that refuses O_DIRECT (ramfs: EINVAL)
    // or a /proc we cannot see: buffered writes only.
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    dfd_.fd = open(self.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (dfd_.fd >= 0) align_ = DirectIoAlignment(dfd_.fd);
  }
  if (threaded_) thread_ = std::thread([this] { Loop(); });
}

FileWriter::~FileWriter() {
  if (threaded_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

void FileWriter::SetError(const char* syscall, int err) {
  if (err_ == 0) {
    err_ = err;
    syscall_ = syscall;
  }
}

int FileWriter::Submit(const uint8_t* buf, std::vector<Run> runs, uint64_t base) {
  if (!threaded_) {
    if (err_) return err_;
    Job job{buf, std::move(runs), base};
    if (int err = Write(job)) SetError("pwrite", err);
    return err_;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (err_) return err_;
  queue_.push_back(Job{buf, std::move(runs), base});
  cv_.notify_all();
  return 0;
}

bool FileWriter::Holds(const uint8_t* buf) const {
  if (writing_ == buf) return true;
  for (const Job& job : queue_) {
    if (job.buf == buf) return true;
  }
  return false;
}

int FileWriter::Wait(const uint8_t* buf) {
  if (!threaded_) return err_;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !Holds(buf); });
  return err_;
}

int FileWriter::Finish() {
  if (!threaded_) return err_;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && writing_ == nullptr; });
  return err_;
}

void FileWriter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return !queue_.empty() || quit_; });
    if (queue_.empty()) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    writing_ = job.buf;
    // After an error the rest is not written (the save fails), only given back.
    const bool write = err_ == 0;
    lock.unlock();
    int err = write ? Write(job) : 0;
    lock.lock();
    if (err) SetError("pwrite", err);
    writing_ = nullptr;
    cv_.notify_all();
  }
}

// One range at a file offset: the aligned middle through O_DIRECT when we
// have it, the rest (and everything after O_DIRECT was refused) buffered.
int FileWriter::WriteRange(const uint8_t* p, size_t n, uint64_t offset) {
  if (dfd_.fd >= 0) {
    const uint64_t a = (offset + align_.offset - 1) / align_.offset * align_.offset;
    const uint64_t b = (offset + n) / align_.offset * align_.offset;
    const uint8_t* mid = p + (a - offset);
    if (a < b && reinterpret_cast<uintptr_t>(mid) % align_.memory == 0) {
      if (int err = a > offset ? WriteAll(fd_, p, a - offset, offset) : 0) return err;
      int err = WriteAll(dfd_.fd, mid, b - a, a);
      if (err == EINVAL) {
        dfd_.Close();  // refused at write time: buffered from now on
        err = WriteAll(fd_, mid, b - a, a);
      }
      if (err) return err;
      return b < offset + n ? WriteAll(fd_, p + (b - offset), offset + n - b, b) : 0;
    }
  }
  return WriteAll(fd_, p, n, offset);
}

int FileWriter::Write(const Job& job) {
  uint64_t from = UINT64_MAX, to = 0;
  for (const Run& run : job.runs) {
    int err = WriteRange(job.buf + run.start, run.len, job.base + run.start);
    if (err) return err;
    bytes_ += run.len;
    from = std::min<uint64_t>(from, job.base + run.start);
    to = std::max<uint64_t>(to, job.base + run.start + run.len);
  }
  if (writeBehind_ && from < to) WriteBehind(from, to);
  return 0;
}

void FileWriter::WriteBehind(uint64_t from, uint64_t to) {
  // Start the write-back of this buffer; wait for the one two buffers back
  // (its write-back had a whole buffer's time to run). Errors are not
  // lost: the fsync that follows every save reports them.
  sync_file_range(fd_, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
  uint64_t* old = behind_[0];
  if (old[1] > old[0]) {
    sync_file_range(fd_, static_cast<off_t>(old[0]), static_cast<off_t>(old[1] - old[0]),
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
  }
  behind_[0][0] = behind_[1][0];
  behind_[0][1] = behind_[1][1];
  behind_[1][0] = from;
  behind_[1][1] = to;
}

}  // namespace shmkeep
