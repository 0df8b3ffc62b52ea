// Residency: which pages of an attachment hold data, and reading them into a
// buffer of ours without allocating the others (mincore, MADV_POPULATE_READ,
// MADV_DONTNEED, /proc/self/map_files with SEEK_DATA/SEEK_HOLE).
//
// mincore() cannot tell a never-touched page (a hole: reading it would
// allocate it) from a swapped-out one (data): both are absent. Which way to
// read is src/residency.ts's decision, passed in as Holes.
#pragma once

#include <fcntl.h>
#include <sys/shm.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "chunks.h"
#include "fileio.h"

namespace shmkeep {

constexpr int kMadvPopulateRead = 22;   // MADV_POPULATE_READ, Linux >= 5.14
constexpr int kMadvPopulateWrite = 23;  // MADV_POPULATE_WRITE, Linux >= 5.14
constexpr size_t kPiece = size_t{256} << 10;  // copied and digested while cache-hot

struct Attachment {
  void* addr = nullptr;
  ~Attachment() {
    if (addr) shmdt(addr);
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(addr); }
};

// MADV_POPULATE_*: fault the range in up front. 0, or the errno (EFAULT,
// ENOMEM, EHWPOISON) that says touching the memory would raise SIGBUS or go
// out of memory. A kernel without it (< 5.14) faults as we go.
int Populate(void* addr, size_t len, int advice);

// Drop our page-table entries for a range of a shared mapping: the segment
// keeps its pages, our resident set stays bounded. A hint.
void DropMapping(void* addr, size_t len);

// KernelPageSize of the mapping starting at addr (/proc/self/smaps), 0 when
// not found. Tells a hugetlb attachment from a normal one.
uint64_t KernelPageSize(const void* addr);

// The swap column of /proc/sysvipc/shm for segment id, in bytes; -1 when not
// found.
int64_t SegmentSwapBytes(int id);

// Open /proc/self/map_files/<start>-<end> of an attachment: the segment's
// shmem file, where SEEK_DATA/SEEK_HOLE tell holes from data (swapped pages
// are data) and pread does not allocate holes. Needs CAP_SYS_ADMIN or
// CAP_CHECKPOINT_RESTORE. The fd, or -errno. O_WRONLY (a restore into a
// new segment): writes fill the segment's pages without mapping them.
int OpenMapFiles(const void* addr, uint64_t mappedLength, int mode = O_RDONLY);

// Whether map_files opens here (a one-page shared anonymous mapping as probe).
bool MapFilesOpens();

enum class Holes {
  kRead,              // populate and read every page
  kMincore,           // pages mincore calls absent are holes
  kMincoreSwapCheck,  // the same while the segment has no swapped page (checked after each chunk's mincore)
  kMapFiles,          // SEEK_DATA/SEEK_HOLE + pread on map_files
};

// Copies chunks of an attachment into buffers of ours and digests the copy.
// One per thread; the lanes of one save share swapSeen (kMincoreSwapCheck:
// once any of them saw a swapped page, every lane reads every page).
class SegmentReader {
 public:
  SegmentReader(const Attachment& seg, int id, uint64_t page, Holes holes, int mapFd, std::atomic<bool>* swapSeen = nullptr)
      : base_(seg.bytes()), id_(id), page_(page), holes_(holes), mapFd_(mapFd), swapSeen_(swapSeen ? swapSeen : &ownSwapSeen_) {}
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  // Chunk [off, off + len): its data runs (relative to off) into buf at the
  // same offsets, piece by piece, each fed to d right after its copy; the
  // holes fed to d as zeros, and not written to buf. 0, or an errno (the
  // syscall in failedSyscall()).
  int Read(uint64_t off, size_t len, uint8_t* buf, ChunkDigest& d, std::vector<Run>& runs);
  const char* failedSyscall() const { return syscall_; }
  // kMincoreSwapCheck found swapped pages: every page was read from then on.
  bool holesLost() const { return swapSeen_->load(); }

 private:
  std::vector<Run> DataRuns(uint64_t off, size_t len);
  std::vector<Run> MapFilesRuns(uint64_t off, size_t len);
  uint8_t* base_;
  const int id_;
  const uint64_t page_;
  const Holes holes_;
  const int mapFd_;
  std::atomic<bool> ownSwapSeen_{false};
  std::atomic<bool>* const swapSeen_;
  std::vector<unsigned char> vec_;
  // map_files: [data_, hole_) is data, [askedAt_, data_) a hole (as last seen)
  uint64_t askedAt_ = UINT64_MAX, data_ = 0, hole_ = 0;
  const char* syscall_ = "";
};

}  // namespace shmkeep
