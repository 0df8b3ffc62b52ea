// Process helpers for `shmkeep run`: start the app in its own process group
// (setpgid, and the terminal's foreground group when asked — as tini does),
// reap exactly the pids we are told to, become a child subreaper.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "common.h"

namespace shmkeep {
namespace {

std::vector<std::string> Strings(const Napi::Value& v) {
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::String>());
  return out;
}

std::vector<char*> Pointers(std::vector<std::string>& s) {
  std::vector<char*> p;
  for (auto& x : s) p.push_back(&x[0]);
  p.push_back(nullptr);
  return p;
}

// spawnApp(file, argv, env, foregroundTtyFd, cgroupProcs, started?) -> pid. file is a
// resolved path (the PATH search is TypeScript's). The child calls only
// async-signal-safe functions between fork and execve. An execve failure comes
// back through a close-on-exec pipe as an errno error with syscall "execve".
// With started, the child waits on a gate pipe until started(pid) has run in
// the parent: what it logs comes before anything the app writes. Should
// started throw, the child is killed and reaped before the error goes on.
Napi::Value SpawnApp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = info[0].As<Napi::String>();
  std::vector<std::string> argv = Strings(info[1]);
  std::vector<std::string> envs = Strings(info[2]);
  int ttyFd = I32(info[3]);
  std::string cgroupProcs = info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : std::string();
  std::vector<char*> argvp = Pointers(argv);
  std::vector<char*> envp = Pointers(envs);

  const bool gated = info.Length() > 5 && info[5].IsFunction();
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) ThrowErrno(env, "pipe2", errno);
  int gate[2] = {-1, -1};
  if (gated && pipe2(gate, O_CLOEXEC) != 0) {
    int err = errno;
    close(pipefd[0]);
    close(pipefd[1]);
    ThrowErrno(env, "pipe2", err);
  }
  sigset_t all, old;
  sigfillset(&all);
  // Block signals around fork so the child cannot run Node's handlers.
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) {
    // Child: default dispositions (Node ignores SIGPIPE; an ignored signal
    // would stay ignored across execve), empty mask, own process group.
    for (int sig = 1; sig < NSIG; sig++) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = SIG_DFL;
      sigaction(sig, &sa, nullptr);
    }
    // Node marks its stdio close-on-exec and libuv puts the pipes it touches
    // in O_NONBLOCK mode: the app would lose its stdio at execve, or get
    // EAGAIN on a plain write. libuv's own spawn clears both on fds 0-2 for
    // its children; so do we.
    for (int fd = 0; fd <= 2; fd++) {
      int fdFlags = fcntl(fd, F_GETFD);
      if (fdFlags >= 0 && (fdFlags & FD_CLOEXEC)) fcntl(fd, F_SETFD, fdFlags & ~FD_CLOEXEC);
      int fl = fcntl(fd, F_GETFL);
      if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    }
    // Report a failure as {stage, errno}: 0 = execve, 1 = joining the cgroup.
    auto fail = [&](int stage) {
      int report[2] = {stage, errno};
      ssize_t ignored = write(pipefd[1], report, sizeof report);
      (void)ignored;
      _exit(127);
    };
    if (!cgroupProcs.empty()) {
      // Join the app's cgroup before exec, so that nothing it forks escapes it.
      int cg = open(cgroupProcs.c_str(), O_WRONLY | O_CLOEXEC);
      if (cg < 0 || write(cg, "0", 1) != 1) fail(1);
      close(cg);
    }
    setpgid(0, 0);
    if (ttyFd >= 0) {
      // SIGTTOU would stop us: we are a background group until this call.
      // It is still blocked here, so tcsetpgrp goes through.
      tcsetpgrp(ttyFd, getpid());
    }
    if (gate[0] >= 0) {
      // Wait for the parent's go: EOF once it closed its end (or died).
      close(gate[1]);
      char c;
      ssize_t r;
      do r = read(gate[0], &c, 1);
      while (r < 0 && errno == EINTR);
    }
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    execve(file.c_str(), argvp.data(), envp.data());
    fail(0);
  }
  int forkErr = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  close(pipefd[1]);
  if (gated) close(gate[0]);
  if (pid < 0) {
    close(pipefd[0]);
    if (gated) close(gate[1]);
    ThrowErrno(env, "fork", forkErr);
  }
  // Also from the parent: whichever runs first, the group exists before we signal it.
  setpgid(pid, pid);
  if (gated) {
    try {
      info[5].As<Napi::Function>().Call({Napi::Number::New(env, pid)});
    } catch (...) {
      kill(pid, SIGKILL);
      close(gate[1]);
      close(pipefd[0]);
      int status;
      waitpid(pid, &status, 0);
      throw;
    }
    close(gate[1]);  // go
  }
  int report[2] = {0, 0};
  ssize_t n;
  do n = read(pipefd[0], report, sizeof report);
  while (n < 0 && errno == EINTR);
  close(pipefd[0]);
  if (n == sizeof report) {
    int status;
    waitpid(pid, &status, 0);  // the child _exit()ed: reap it here
    ThrowErrno(env, report[0] == 1 ? "cgroup.procs" : "execve", report[1]);
  }
  return Napi::Number::New(env, pid);
}

// waitPid(pid) -> null while it runs, {code} or {signal} once it exited, and
// reaps it. Only the pid given: never a blanket wait, which would steal exit
// statuses from libuv's own child handling.
Napi::Value WaitPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int status;
  pid_t r;
  do r = waitpid(I32(info[0]), &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r < 0) ThrowErrno(env, "waitpid", errno);
  if (r == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  if (WIFEXITED(status)) o.Set("code", WEXITSTATUS(status));
  else if (WIFSIGNALED(status)) o.Set("signal", WTERMSIG(status));
  return o;
}

Napi::Value SetChildSubreaper(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) ThrowErrno(info.Env(), "prctl", errno);
  return info.Env().Undefined();
}

// foregroundGroup(fd) -> the terminal's foreground process group, or -1.
Napi::Value ForegroundGroup(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), tcgetpgrp(I32(info[0])));
}

// setForeground(fd, pgid): give the terminal back (SIGTTOU ignored around it).
Napi::Value SetForeground(const Napi::CallbackInfo& info) {
  struct sigaction ign, old;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGTTOU, &ign, &old);
  int rc = tcsetpgrp(I32(info[0]), I32(info[1]));
  int err = errno;
  sigaction(SIGTTOU, &old, nullptr);
  if (rc != 0) ThrowErrno(info.Env(), "tcsetpgrp", err);
  return info.Env().Undefined();
}

}  // namespace

void InitProc(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnApp", Napi::Function::New(env, SpawnApp, "spawnApp"));
  exports.Set("waitPid", Napi::Function::New(env, WaitPid, "waitPid"));
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("foregroundGroup", Napi::Function::New(env, ForegroundGroup, "foregroundGroup"));
  exports.Set("setForeground", Napi::Function::New(env, SetForeground, "setForeground"));
}

}  // namespace shmkeep
