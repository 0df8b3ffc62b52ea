/* counter — a small legacy app that keeps its state in System V shared memory,
 * the kind of program shmkeep exists for. Everything it knows lives in one
 * segment at key 0x162e: a table ('a'..'z') and a counter. On a physical host
 * the segment outlives the process; in a container it dies with the container's
 * IPC namespace unless shmkeep saves and restores it.
 *
 *   counter [OPTIONS] COMMAND [COMMAND...]     the commands run in order
 *
 * Commands:
 *   write-abc   create the segment if needed and fill its table with 'a'..'z'
 *   read-abc    print the table as "a b c ... z" (exit 1 if there is no segment)
 *   serve       increment the counter every 100 ms until TERM or INT, then exit 0
 *               (with --workers N: fork N workers that each count in a slot of
 *               their own; the parent does NOT pass TERM on to them, it only
 *               waits for them, like many pre-fork servers: the stop must reach
 *               the whole process group — shmkeep run --signal-group)
 *   get         print "count=N starts=N workers=N,N,..."
 *
 * Options (before the commands):
 *   --key KEY       the segment's key (default 0x162e)
 *   --mode MODE     permissions of a segment it creates (default 0600)
 *   --uid UID       drop root: become UID (and --gid GID, default UID) before
 *                   touching shared memory (setgroups, setresgid, setresuid),
 *                   as an entrypoint that runs as root but must not run the
 *                   app as root does. The segment is then owned by UID.
 *   --gid GID
 *   --workers N     see serve (1..8)
 *
 * Output is line-buffered, so a container log shows each line at once.
 * Build: cc -O2 -o counter counter.c      (or: make)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/shm.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 8

/* The segment's layout: what the app finds again after a restart. */
struct state {
  char magic[8];                 /* "counter" once initialised */
  char table[26];                /* 'a'..'z' after write-abc */
  char pad[6];
  uint64_t count;                /* serve: +1 every 100 ms */
  uint64_t starts;               /* serve: +1 per start */
  uint64_t workers[MAX_WORKERS]; /* serve --workers: one counter per worker */
};

static key_t key = 0x162e;
static int mode = 0600;
static int nworkers = 0;
static volatile sig_atomic_t stop = 0;

static void on_stop(int sig) { stop = sig; }

static const char *signame(int sig) { return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "?"; }

static void die(const char *what) {
  fprintf(stderr, "counter: %s (key 0x%x): %s\n", what, (unsigned)key, strerror(errno));
  exit(1);
}

/* Attach the segment; create it (zero-filled, `mode`) when `create`. NULL if absent. */
static struct state *attach(int create) {
  int id = shmget(key, 4096, create ? IPC_CREAT | mode : 0);
  if (id < 0) {
    if (errno == ENOENT && !create) return NULL;
    die("shmget");
  }
  struct state *s = shmat(id, NULL, 0);
  if (s == (void *)-1) die("shmat");
  memcpy(s->magic, "counter", 8);
  return s;
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL); /* a signal cuts it short: the loop checks `stop` */
}

static int serve(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop; /* no SA_RESTART: waitpid and nanosleep return on TERM */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  struct state *s = attach(1);
  s->starts++;
  printf("serve: start %llu, count=%llu\n", (unsigned long long)s->starts, (unsigned long long)s->count);
  if (nworkers > 0) {
    for (int i = 0; i < nworkers; i++) {
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        while (!stop) {
          s->workers[i]++;
          sleep_ms(100);
        }
        printf("worker %d: stopped at %llu by %s\n", i, (unsigned long long)s->workers[i], signame(stop));
        _exit(0);
      }
    }
    printf("serve: %d workers running\n", nworkers);
    /* The parent only waits: a TERM to it alone stops nothing. */
    int left = nworkers, status = 0;
    while (left > 0) {
      if (waitpid(-1, &status, 0) > 0) left--;
      else if (errno == ECHILD) break;
    }
    printf("serve: all workers stopped\n");
    return 0;
  }
  while (!stop) {
    s->count++;
    sleep_ms(100);
  }
  printf("serve: stopped at count=%llu by %s\n", (unsigned long long)s->count, signame(stop));
  return 0;
}

static void drop_privileges(long uid, long gid) {
  if (setgroups(0, NULL) != 0) die("setgroups");
  if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) die("setresgid");
  if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) die("setresuid");
}

static void usage(void) {
  fprintf(stderr, "usage: counter [--key KEY] [--mode MODE] [--uid UID [--gid GID]] [--workers N] write-abc|read-abc|serve|get ...\n");
  exit(2);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  long uid = -1, gid = -1;
  int i = 1;
  for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
    if (i + 1 >= argc) usage();
    if (!strcmp(argv[i], "--key")) key = (key_t)strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--mode")) mode = (int)strtol(argv[++i], NULL, 8) & 0777;
    else if (!strcmp(argv[i], "--uid")) uid = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--gid")) gid = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--workers")) nworkers = atoi(argv[++i]);
    else usage();
  }
  if (i >= argc || nworkers < 0 || nworkers > MAX_WORKERS) usage();
  if (uid >= 0) drop_privileges(uid, gid >= 0 ? gid : uid);

  for (; i < argc; i++) {
    const char *cmd = argv[i];
    if (!strcmp(cmd, "write-abc")) {
      struct state *s = attach(1);
      for (int c = 0; c < 26; c++) s->table[c] = (char)('a' + c);
      shmdt(s);
    } else if (!strcmp(cmd, "read-abc")) {
      struct state *s = attach(0);
      if (!s) {
        printf("no segment at key 0x%x\n", (unsigned)key);
        return 1;
      }
      for (int c = 0; c < 26; c++) printf(c ? " %c" : "%c", s->table[c] ? s->table[c] : '.');
      printf("\n");
      shmdt(s);
    } else if (!strcmp(cmd, "get")) {
      struct state *s = attach(0);
      if (!s) {
        printf("no segment at key 0x%x\n", (unsigned)key);
        return 1;
      }
      printf("count=%llu starts=%llu workers=", (unsigned long long)s->count, (unsigned long long)s->starts);
      for (int w = 0; w < MAX_WORKERS; w++) printf(w ? ",%llu" : "%llu", (unsigned long long)s->workers[w]);
      printf("\n");
      shmdt(s);
    } else if (!strcmp(cmd, "serve")) {
      int r = serve();
      if (r != 0) return r;
    } else {
      usage();
    }
  }
  return 0;
}
