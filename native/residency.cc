// Residency (see residency.h).
#include "residency.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace shmkeep {

int Populate(void* addr, size_t len, int advice) {
  while (madvise(addr, len, advice) != 0) {
    if (errno == EINTR) continue;
    if (errno == EFAULT || errno == ENOMEM || errno == EHWPOISON) return errno;
    return 0;
  }
  return 0;
}

void DropMapping(void* addr, size_t len) { madvise(addr, len, MADV_DONTNEED); }

namespace {

std::string ReadText(const char* path) {
  std::string text;
  Fd f{open(path, O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return text;
  char buf[65536];
  for (;;) {
    ssize_t r = read(f.fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
  }
  return text;
}

}  // namespace

uint64_t KernelPageSize(const void* addr) {
  const std::string text = ReadText("/proc/self/smaps");
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

int64_t SegmentSwapBytes(int id) {
  // "key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap"
  const std::string text = ReadText("/proc/sysvipc/shm");
  for (size_t pos = text.find('\n'); pos != std::string::npos && pos + 1 < text.size();) {
    size_t eol = text.find('\n', pos + 1);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos + 1, eol - pos - 1);
    long long fields[16];
    int n = sscanf(line.c_str(), "%lld %lld %llo %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
                   &fields[0], &fields[1], &fields[2], &fields[3], &fields[4], &fields[5], &fields[6], &fields[7],
                   &fields[8], &fields[9], &fields[10], &fields[11], &fields[12], &fields[13], &fields[14], &fields[15]);
    if (n == 16 && fields[1] == id) return fields[15];
    pos = eol;
  }
  return -1;
}

int OpenMapFiles(const void* addr, uint64_t mappedLength, int mode) {
  char path[80];
  const uintptr_t start = reinterpret_cast<uintptr_t>(addr);
  snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", static_cast<unsigned long>(start),
           static_cast<unsigned long>(start + mappedLength));
  int fd = open(path, mode | O_CLOEXEC);
  return fd >= 0 ? fd : -errno;
}

bool MapFilesOpens() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, page, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  int fd = OpenMapFiles(p, page);
  munmap(p, page);
  if (fd < 0) return false;
  close(fd);
  return true;
}

// SEEK_DATA/SEEK_HOLE on map_files, remembering the extent found: on shmem,
// SEEK_HOLE walks to the next hole, which for a full segment is its end, so
// asking again for every chunk would cost O(size) per chunk.
std::vector<Run> SegmentReader::MapFilesRuns(uint64_t off, size_t len) {
  std::vector<Run> runs;
  const uint64_t end = off + len;
  for (uint64_t pos = off; pos < end;) {
    if (pos >= askedAt_ && pos < data_) {  // a known hole
      pos = data_;
      continue;
    }
    if (!(pos >= data_ && pos < hole_)) {
      off_t data = lseek(mapFd_, static_cast<off_t>(pos), SEEK_DATA);
      askedAt_ = pos;
      if (data < 0) {
        if (errno == ENXIO) {  // a hole to the end
          data_ = hole_ = UINT64_MAX;
          break;
        }
        runs.push_back({static_cast<size_t>(pos - off), static_cast<size_t>(end - pos)});  // cannot tell: read it
        break;
      }
      off_t hole = lseek(mapFd_, data, SEEK_HOLE);
      data_ = static_cast<uint64_t>(data);
      hole_ = hole < 0 ? UINT64_MAX : static_cast<uint64_t>(hole);
      continue;
    }
    const uint64_t stop = std::min(end, hole_);
    runs.push_back({static_cast<size_t>(pos - off), static_cast<size_t>(stop - pos)});
    pos = stop;
  }
  return runs;
}

// Which byte ranges of the chunk to read; the rest are holes.
std::vector<Run> SegmentReader::DataRuns(uint64_t off, size_t len) {
  if (holes_ == Holes::kMapFiles) return MapFilesRuns(off, len);
  if (holes_ == Holes::kRead || (holes_ == Holes::kMincoreSwapCheck && swapSeen_->load())) return {{0, len}};
  const size_t pages = (len + page_ - 1) / page_;
  vec_.resize(pages);
  if (mincore(base_ + off, len, vec_.data()) != 0) return {{0, len}};  // cannot know: read it
  size_t present = 0;
  for (size_t k = 0; k < pages; k++) present += vec_[k] & 1;
  if (present == pages) return {{0, len}};
  if (holes_ == Holes::kMincoreSwapCheck && SegmentSwapBytes(id_) != 0) {
    // Some page is swapped out (or we cannot tell): an absent page may be
    // data. From here on, read every page (every lane).
    swapSeen_->store(true);
    return {{0, len}};
  }
  std::vector<Run> runs;
  for (size_t k = 0; k < pages;) {
    if (!(vec_[k] & 1)) {
      k++;
      continue;
    }
    size_t j = k;
    while (j < pages && (vec_[j] & 1)) j++;
    const size_t start = k * page_, end = std::min(len, j * page_);
    runs.push_back({start, end - start});
    k = j;
  }
  return runs;
}

int SegmentReader::Read(uint64_t off, size_t len, uint8_t* buf, ChunkDigest& d, std::vector<Run>& runs) {
  runs = DataRuns(off, len);
  size_t pos = 0;
  for (const Run& run : runs) {
    d.Zeros(run.start - pos);
    if (mapFd_ >= 0) {
      // map_files said where the data is (swapped pages included): pread
      // the segment's file. No page of the segment enters our page tables:
      // no populate, no drop, which is most of the cost of reading through
      // the attachment (page-table updates are dear, and dearer still in a
      // virtual machine).
      for (size_t at = 0; at < run.len;) {
        const size_t want = std::min(kPiece, run.len - at);
        uint8_t* p = buf + run.start + at;
        const int64_t got = ReadFull(mapFd_, p, want, off + run.start + at);
        if (got < 0) return syscall_ = "pread", static_cast<int>(-got);
        if (static_cast<size_t>(got) != want) return syscall_ = "pread", EIO;  // the file is the segment: never short
        d.Data(p, want);
        at += want;
      }
    } else {
      uint8_t* src = base_ + off + run.start;
      if (int err = Populate(src, run.len, kMadvPopulateRead)) return syscall_ = "madvise", err;
      for (size_t at = 0; at < run.len;) {
        const size_t want = std::min(kPiece, run.len - at);
        // One copy from live memory: from here on only our buffer counts.
        memcpy(buf + run.start + at, src + at, want);
        d.Data(buf + run.start + at, want);
        at += want;
      }
      DropMapping(src, run.len);
    }
    pos = run.start + run.len;
  }
  d.Zeros(len - pos);
  return 0;
}

}  // namespace shmkeep
