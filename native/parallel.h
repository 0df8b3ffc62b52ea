// One segment's or one file's chunks on several threads.
//
// A single large segment is the common case (one 1 GiB or 4 GiB segment),
// and one thread cannot keep up with the disk: the page-table work of
// reading the attachment (populate, drop), the copy into our buffer and the
// XXH3-128 / CRC-32C of it take about as long as the disk's write. So the
// chunks of one job are shared by `lanes` threads: the worker's own thread
// and lanes - 1 helpers, each claiming the next chunk index from one
// counter (chunks are taken in file order; a slow chunk holds up no other).
// How many lanes is src/'s decision (src/lanes.ts).
//
// The helpers do system calls and byte loops only, never N-API; each lane
// keeps its own state (reader, buffers, counts, first error) and the
// worker's thread merges them once every lane has returned.
#pragma once

#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace shmkeep {

// Calls fn(lane, i) for every i in [first, end), on `lanes` threads at most
// (never more than there are chunks). fn returns false to stop every lane
// once its current chunk is done (an error, a cancel, a difference found).
// Returns when every lane has returned. A helper thread that cannot be
// started (EAGAIN) leaves its share to the others.
template <typename Fn>
void ForEachChunk(unsigned lanes, uint64_t first, uint64_t end, Fn&& fn) {
  std::atomic<uint64_t> next{first};
  std::atomic<bool> stop{false};
  auto loop = [&](unsigned lane) {
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= end) return;
      if (!fn(lane, i)) stop.store(true, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> helpers;
  for (unsigned lane = 1; lane < lanes && first + lane < end; lane++) {
    try {
      helpers.emplace_back(loop, lane);
    } catch (const std::system_error&) {
      break;
    }
  }
  loop(0);
  for (std::thread& t : helpers) t.join();
}

// The lanes option of a job: 1 when not given, at most 64.
inline unsigned LanesOf(const Napi::Object& o) {
  Napi::Value v = o.Get("lanes");
  if (!v.IsNumber()) return 1;
  const int n = v.As<Napi::Number>().Int32Value();
  return static_cast<unsigned>(n < 1 ? 1 : n > 64 ? 64 : n);
}

// The first error of a lane (errno and the system call that returned it).
struct LaneError {
  const char* syscall = nullptr;
  int err = 0;
  // Keeps the first; returns false (fn's "stop").
  bool Set(const char* s, int e) {
    if (!err) {
      syscall = s;
      err = e;
    }
    return false;
  }
};

// What a lane of a restore or a verify found.
struct CheckLane {
  std::vector<uint64_t> bad;  // chunks that failed their CRC
  uint64_t bytesRead = 0;
  LaneError error;
};

// The lanes' findings as one: every bad chunk in chunk order, the bytes
// read; returns the first lane's error (err 0 when none).
template <typename L>
LaneError MergeChecks(const std::vector<L>& lanes, std::vector<uint64_t>& bad, uint64_t& bytesRead) {
  for (const CheckLane& l : lanes) {
    if (l.error.err) return l.error;
    bad.insert(bad.end(), l.bad.begin(), l.bad.end());
    bytesRead += l.bytesRead;
  }
  std::sort(bad.begin(), bad.end());
  return {};
}

}  // namespace shmkeep
