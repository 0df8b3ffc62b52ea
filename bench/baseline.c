/* The benchmark's C side (bench/run.mjs compiles it with cc -O2): the plain
 * C baselines shmkeep is measured against, and the helpers that make and
 * touch segments. Every timed command prints one JSON line on stdout with
 * "ns" (CLOCK_MONOTONIC, around the work only, not process start-up).
 *
 *   fill KEY SIZE SEED           create segment KEY (IPC_EXCL, 0600) and fill it
 *                                with a pseudo-random pattern; prints its id
 *   snap ID DIR NAME             durable copy, the plain way: attach read-only,
 *                                write() from the attachment in 4 MiB pieces
 *                                (no prefaulting) into DIR/.NAME.tmp, fsync,
 *                                rename to DIR/NAME, fsync DIR
 *   restore PATH                 shmget(IPC_PRIVATE, file size) + shmat + read()
 *                                in 4 MiB pieces straight into the segment
 *                                (the segment is removed at exit)
 *   read PATH                    read() the file in 4 MiB pieces into a buffer
 *   dwrite PATH SIZE             the disk's ceiling: O_DIRECT 4 MiB writes of a
 *                                new file, then fsync
 *   dread PATH                   O_DIRECT 4 MiB reads of the whole file
 *   evict PATH...                fdatasync + posix_fadvise(DONTNEED) each file;
 *                                prints how many of their pages stay cached
 *   hold ID                      attach and wait (an app that stays attached)
 *                                until SIGTERM/SIGINT
 *   touch ID CHUNK STEP          write one byte in every STEP-th chunk (chunks
 *                                STEP-1, 2 STEP-1, ...; the last one when fewer)
 *   app KEY SIZE CHUNK STEP      a legacy app for checkpoints: create KEY, fill
 *                                it, print {"ready":true}, then keep dirtying the
 *                                same chunks as touch (a counter at a moving
 *                                offset, every millisecond) until SIGTERM
 *   resident ID PATH CHUNK STEP  the floor of an incremental checkpoint: read the
 *                                whole resident segment computing a simple
 *                                checksum, and write() the chunks the app
 *                                dirties (as touch) to PATH without fsync
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PIECE (4UL << 20)
#define ALIGN 4096

static void die(const char *what) {
  fprintf(stderr, "baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t num(const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end) {
    fprintf(stderr, "baseline: not a number: %s\n", s);
    exit(2);
  }
  return v;
}

/* A counter-based pseudo-random pattern: every 8 bytes differ, none is zero
 * in practice, and it is cheap enough that filling is bound by page faults. */
static void fill_pattern(uint8_t *p, size_t n, uint64_t seed) {
  uint64_t *w = (uint64_t *)p;
  size_t words = n / 8;
  for (size_t i = 0; i < words; i++) {
    uint64_t x = (i + seed) * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    w[i] = x ^ (x >> 32);
  }
  for (size_t i = words * 8; i < n; i++) p[i] = (uint8_t)(i * 131 + seed + 1);
}

/* The chunks an app "changes": every STEP-th one, the STEP-th first (index
 * STEP-1, so not the first chunk a scan meets), or the last chunk when the
 * segment has fewer than STEP. */
static size_t first_changed(size_t size, size_t chunk, size_t step) {
  size_t chunks = (size + chunk - 1) / chunk;
  return step - 1 < chunks ? step - 1 : chunks - 1;
}

static size_t write_all(int fd, const uint8_t *p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    done += (size_t)w;
  }
  return done;
}

static size_t read_full(int fd, uint8_t *p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  return done;
}

static void *attach(int id, int flags, size_t *size) {
  struct shmid_ds ds;
  if (shmctl(id, IPC_STAT, &ds) != 0) die("shmctl IPC_STAT");
  void *a = shmat(id, NULL, flags);
  if (a == (void *)-1) die("shmat");
  *size = ds.shm_segsz;
  return a;
}

static void fsync_dir(const char *dir) {
  int d = open(dir, O_RDONLY | O_DIRECTORY);
  if (d < 0) die("open dir");
  if (fsync(d) != 0) die("fsync dir");
  close(d);
}

static int cmd_fill(char **a) {
  key_t key = (key_t)num(a[0]);
  size_t size = num(a[1]);
  int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600);
  if (id < 0) die("shmget");
  void *p = shmat(id, NULL, 0);
  if (p == (void *)-1) die("shmat");
  uint64_t t0 = now_ns();
  fill_pattern(p, size, num(a[2]));
  uint64_t ns = now_ns() - t0;
  shmdt(p);
  printf("{\"id\":%d,\"ns\":%" PRIu64 "}\n", id, ns);
  return 0;
}

static int cmd_snap(char **a) {
  size_t size;
  int id = (int)num(a[0]);
  const char *dir = a[1], *name = a[2];
  char tmp[4096], dst[4096];
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
  snprintf(dst, sizeof dst, "%s/%s", dir, name);
  uint64_t t0 = now_ns();
  uint8_t *p = attach(id, SHM_RDONLY, &size);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("open");
  for (size_t off = 0; off < size; off += PIECE) write_all(fd, p + off, size - off < PIECE ? size - off : PIECE);
  if (fsync(fd) != 0) die("fsync");
  if (close(fd) != 0) die("close");
  if (rename(tmp, dst) != 0) die("rename");
  fsync_dir(dir);
  uint64_t ns = now_ns() - t0;
  shmdt(p);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu}\n", ns, size);
  return 0;
}

static int cmd_restore(char **a) {
  uint64_t t0 = now_ns();
  int fd = open(a[0], O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open");
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  size_t size = (size_t)st.st_size;
  int id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
  if (id < 0) die("shmget");
  uint8_t *p = shmat(id, NULL, 0);
  if (p == (void *)-1) {
    shmctl(id, IPC_RMID, NULL);
    die("shmat");
  }
  size_t got = 0;
  for (size_t off = 0; off < size; off += PIECE) got += read_full(fd, p + off, size - off < PIECE ? size - off : PIECE);
  uint64_t ns = now_ns() - t0;
  close(fd);
  shmdt(p);
  shmctl(id, IPC_RMID, NULL);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu}\n", ns, got);
  return got == size ? 0 : 1;
}

static int cmd_read(char **a) {
  uint8_t *buf;
  if (posix_memalign((void **)&buf, ALIGN, PIECE) != 0) die("posix_memalign");
  uint64_t t0 = now_ns();
  int fd = open(a[0], O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open");
  size_t got = 0, r;
  while ((r = read_full(fd, buf, PIECE)) > 0) got += r;
  uint64_t ns = now_ns() - t0;
  close(fd);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu}\n", ns, got);
  return 0;
}

static int cmd_dwrite(char **a) {
  size_t size = num(a[1]);
  uint8_t *buf;
  if (posix_memalign((void **)&buf, ALIGN, PIECE) != 0) die("posix_memalign");
  fill_pattern(buf, PIECE, 7);
  uint64_t t0 = now_ns();
  int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) die("open O_DIRECT");
  for (size_t off = 0; off < size; off += PIECE) {
    size_t n = size - off < PIECE ? size - off : PIECE;
    n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    write_all(fd, buf, n);
  }
  if (fsync(fd) != 0) die("fsync");
  uint64_t ns = now_ns() - t0;
  close(fd);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu}\n", ns, size);
  return 0;
}

static int cmd_dread(char **a) {
  uint8_t *buf;
  if (posix_memalign((void **)&buf, ALIGN, PIECE) != 0) die("posix_memalign");
  uint64_t t0 = now_ns();
  int fd = open(a[0], O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) die("open O_DIRECT");
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf, PIECE);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read O_DIRECT");
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  uint64_t ns = now_ns() - t0;
  close(fd);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu}\n", ns, got);
  return 0;
}

static int cmd_evict(int n, char **a) {
  long page = sysconf(_SC_PAGESIZE);
  uint64_t resident = 0, pages = 0;
  for (int i = 0; i < n; i++) {
    int fd = open(a[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open");
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    if (fdatasync(fd) != 0) die("fdatasync");
    if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) die("posix_fadvise");
    if (st.st_size > 0) {
      void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
      if (m == MAP_FAILED) die("mmap");
      size_t np = ((size_t)st.st_size + (size_t)page - 1) / (size_t)page;
      unsigned char *vec = malloc(np);
      if (!vec || mincore(m, (size_t)st.st_size, vec) != 0) die("mincore");
      for (size_t k = 0; k < np; k++) resident += vec[k] & 1;
      pages += np;
      free(vec);
      munmap(m, (size_t)st.st_size);
    }
    close(fd);
  }
  printf("{\"pages\":%" PRIu64 ",\"resident\":%" PRIu64 "}\n", pages, resident);
  return 0;
}

static volatile sig_atomic_t stop;
static void on_stop(int sig) {
  (void)sig;
  stop = 1;
}

static int cmd_hold(char **a) {
  size_t size;
  void *p = attach((int)num(a[0]), SHM_RDONLY, &size);
  signal(SIGTERM, on_stop);
  signal(SIGINT, on_stop);
  printf("{\"ready\":true}\n");
  fflush(stdout);
  while (!stop) pause();
  shmdt(p);
  return 0;
}

static int cmd_touch(char **a) {
  size_t size, chunk = num(a[1]), step = num(a[2]), n = 0;
  uint8_t *p = attach((int)num(a[0]), 0, &size);
  for (size_t c = first_changed(size, chunk, step); c * chunk < size; c += step, n++) p[c * chunk] ^= 0x5a;
  shmdt(p);
  printf("{\"touched\":%zu}\n", n);
  return 0;
}

static int cmd_app(char **a) {
  key_t key = (key_t)num(a[0]);
  size_t size = num(a[1]), chunk = num(a[2]), step = num(a[3]);
  signal(SIGTERM, on_stop);
  signal(SIGINT, on_stop);
  int id = shmget(key, size, IPC_CREAT | 0600);
  if (id < 0) die("shmget");
  uint8_t *p = shmat(id, NULL, 0);
  if (p == (void *)-1) die("shmat");
  fill_pattern(p, size, (uint64_t)key);
  printf("{\"ready\":true,\"id\":%d}\n", id);
  fflush(stdout);
  uint64_t counter = 0;
  struct timespec ms = {0, 1000000};
  while (!stop) {
    counter++;
    for (size_t c = first_changed(size, chunk, step); c * chunk < size; c += step) {
      size_t len = size - c * chunk < chunk ? size - c * chunk : chunk;
      size_t at = (counter * 4096 + 64 * (counter % 61)) % (len - 8);
      memcpy(p + c * chunk + at, &counter, 8);
    }
    nanosleep(&ms, NULL);
  }
  shmdt(p);
  return 0;
}

static int cmd_resident(char **a) {
  size_t size, chunk = num(a[2]), step = num(a[3]), written = 0;
  uint64_t t0 = now_ns();
  const uint8_t *p = attach((int)num(a[0]), SHM_RDONLY, &size);
  /* Two 64-bit lanes, sum and xor: a checksum the compiler vectorizes. */
  const uint64_t *w = (const uint64_t *)p;
  uint64_t sum = 0, x = 0;
  for (size_t i = 0; i < size / 8; i++) {
    sum += w[i];
    x ^= w[i];
  }
  int fd = open(a[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("open");
  for (size_t c = first_changed(size, chunk, step); c * chunk < size; c += step) {
    size_t len = size - c * chunk < chunk ? size - c * chunk : chunk;
    written += write_all(fd, p + c * chunk, len);
  }
  uint64_t ns = now_ns() - t0;
  close(fd);
  shmdt((void *)p);
  printf("{\"ns\":%" PRIu64 ",\"bytes\":%zu,\"written\":%zu,\"sum\":\"%016" PRIx64 "\"}\n", ns, size, written, sum ^ x);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: baseline COMMAND ARGS... (see bench/baseline.c)\n");
    return 2;
  }
  const char *c = argv[1];
  char **a = argv + 2;
  int n = argc - 2;
#define NEED(k)                                                    \
  if (n < (k)) {                                                   \
    fprintf(stderr, "baseline %s: needs %d arguments\n", c, (k)); \
    return 2;                                                      \
  }
  if (!strcmp(c, "fill")) { NEED(3) return cmd_fill(a); }
  if (!strcmp(c, "snap")) { NEED(3) return cmd_snap(a); }
  if (!strcmp(c, "restore")) { NEED(1) return cmd_restore(a); }
  if (!strcmp(c, "read")) { NEED(1) return cmd_read(a); }
  if (!strcmp(c, "dwrite")) { NEED(2) return cmd_dwrite(a); }
  if (!strcmp(c, "dread")) { NEED(1) return cmd_dread(a); }
  if (!strcmp(c, "evict")) { NEED(1) return cmd_evict(n, a); }
  if (!strcmp(c, "hold")) { NEED(1) return cmd_hold(a); }
  if (!strcmp(c, "touch")) { NEED(3) return cmd_touch(a); }
  if (!strcmp(c, "app")) { NEED(4) return cmd_app(a); }
  if (!strcmp(c, "resident")) { NEED(4) return cmd_resident(a); }
  fprintf(stderr, "baseline: unknown command %s\n", c);
  return 2;
}
