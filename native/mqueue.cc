// POSIX message queues: mq_open (with attributes, as an identity), mq_getattr,
// mq_send and mq_receive on descriptors opened O_NONBLOCK (nothing here waits
// on the JS thread), mq_unlink. A queue descriptor is a file descriptor on
// Linux: Node's fs closes it, fchmods it and fstats it. Which queues, when it
// is safe to take their messages, and every limit is src/kinds/mqueue.ts.
#include <fcntl.h>
#include <mqueue.h>

#include <vector>

#include "common.h"

namespace shmkeep {
namespace {

#define AS_IDENTITY(uidArg, gidArg)            \
  ThreadIdentity as(I64(uidArg), I64(gidArg)); \
  if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error())

// mqOpen(name, oflag, mode, maxmsg, msgsize, uid, gid) -> descriptor. With
// maxmsg > 0 the queue is created with these attributes (oflag has O_CREAT);
// O_NONBLOCK is always added. Created as uid/gid when given (-1: as we are):
// the kernel charges RLIMIT_MSGQUEUE to the creating user.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  const int oflag = I32(info[1]) | O_NONBLOCK;
  const mode_t mode = static_cast<mode_t>(U32(info[2]));
  struct mq_attr attr {};
  attr.mq_maxmsg = I64(info[3]);
  attr.mq_msgsize = I64(info[4]);
  mqd_t q;
  int err = 0;
  {
    AS_IDENTITY(info[5], info[6]);
    q = mq_open(name.c_str(), oflag, mode, attr.mq_maxmsg > 0 ? &attr : nullptr);
    if (q == static_cast<mqd_t>(-1)) err = errno;
  }
  if (q == static_cast<mqd_t>(-1)) ThrowErrno(env, "mq_open", err);
  return Napi::Number::New(env, q);
}

// mqAttr(fd) -> { maxmsg, msgsize, curmsgs }
Napi::Value Attr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct mq_attr attr {};
  if (mq_getattr(static_cast<mqd_t>(I32(info[0])), &attr) != 0) ThrowErrno(env, "mq_getattr", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxmsg", Napi::Number::New(env, static_cast<double>(attr.mq_maxmsg)));
  o.Set("msgsize", Napi::Number::New(env, static_cast<double>(attr.mq_msgsize)));
  o.Set("curmsgs", Napi::Number::New(env, static_cast<double>(attr.mq_curmsgs)));
  return o;
}

// mqTakeAll(fd, msgsize) -> { prios, sizes, data, resent, error? }: receive
// every message (delivery order: highest priority first, FIFO within one),
// then send each back at once with its priority, which rebuilds the same
// order. There is no way to read a message without removing it. `resent`
// counts the messages back in the queue; `error` is the errno of the first
// send back that failed (the caller says which messages are gone).
Napi::Value TakeAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const mqd_t q = static_cast<mqd_t>(I32(info[0]));
  const size_t msgsize = static_cast<size_t>(I64(info[1]));
  std::vector<char> buf(msgsize ? msgsize : 1);
  std::vector<unsigned> prios;
  std::vector<size_t> sizes;
  std::vector<char> data;
  int recvErr = 0;
  for (;;) {
    unsigned prio = 0;
    ssize_t n = mq_receive(q, buf.data(), buf.size(), &prio);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) recvErr = errno;
      break;
    }
    prios.push_back(prio);
    sizes.push_back(static_cast<size_t>(n));
    data.insert(data.end(), buf.data(), buf.data() + n);
  }
  size_t resent = 0, at = 0;
  int sendErr = 0;
  for (size_t i = 0; i < prios.size(); i++) {
    while (mq_send(q, data.data() + at, sizes[i], prios[i]) != 0) {
      if (errno == EINTR) continue;
      if (!sendErr) sendErr = errno;
      break;
    }
    if (!sendErr) resent++;
    at += sizes[i];
  }
  Napi::Object o = Napi::Object::New(env);
  Napi::Array p = Napi::Array::New(env, prios.size()), s = Napi::Array::New(env, sizes.size());
  for (size_t i = 0; i < prios.size(); i++) {
    p.Set(static_cast<uint32_t>(i), Napi::Number::New(env, prios[i]));
    s.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(sizes[i])));
  }
  o.Set("prios", p);
  o.Set("sizes", s);
  o.Set("data", Napi::Buffer<char>::Copy(env, data.data(), data.size()));
  o.Set("resent", Napi::Number::New(env, static_cast<double>(resent)));
  if (sendErr) o.Set("error", ErrnoError(env, "mq_send", sendErr).Value());
  else if (recvErr) o.Set("error", ErrnoError(env, "mq_receive", recvErr).Value());
  return o;
}

// mqSend(fd, data, prio) -> false when the queue is full (EAGAIN).
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const mqd_t q = static_cast<mqd_t>(I32(info[0]));
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  const unsigned prio = U32(info[2]);
  while (mq_send(q, reinterpret_cast<const char*>(data.Data()), data.ByteLength(), prio) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return Napi::Boolean::New(env, false);
    ThrowErrno(env, "mq_send", errno);
  }
  return Napi::Boolean::New(env, true);
}

// mqUnlink(name, uid, gid)
Napi::Value Unlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  int rc, err = 0;
  {
    AS_IDENTITY(info[1], info[2]);
    rc = mq_unlink(name.c_str());
    if (rc != 0) err = errno;
  }
  if (rc != 0) ThrowErrno(env, "mq_unlink", err);
  return env.Undefined();
}

}  // namespace

void InitMqueue(Napi::Env env, Napi::Object exports) {
  exports.Set("mqOpen", Napi::Function::New(env, Open, "mqOpen"));
  exports.Set("mqAttr", Napi::Function::New(env, Attr, "mqAttr"));
  exports.Set("mqTakeAll", Napi::Function::New(env, TakeAll, "mqTakeAll"));
  exports.Set("mqSend", Napi::Function::New(env, Send, "mqSend"));
  exports.Set("mqUnlink", Napi::Function::New(env, Unlink, "mqUnlink"));
}

}  // namespace shmkeep
