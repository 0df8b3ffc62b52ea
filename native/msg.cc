// System V message queues: msgget, msgctl (IPC_STAT, MSG_STAT_ANY, IPC_SET,
// IPC_RMID, IPC_INFO, MSG_INFO), msgsnd and msgrcv, always with IPC_NOWAIT
// (nothing here waits on the JS thread), and msgrcv with MSG_COPY: a copy of
// the message at a position, left in the queue. Arguments arrive validated
// from src/msg.ts. Calls that need a permission take an identity (uid/gid,
// -1 = as we are) for the calling thread, as shm.cc does.
#include <sys/ipc.h>
#include <sys/msg.h>

#include <algorithm>
#include <vector>

#include "common.h"

#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13  // Linux >= 4.17; older kernels answer EINVAL
#endif
#ifndef MSG_COPY
#define MSG_COPY 040000  // Linux >= 3.8 with CONFIG_CHECKPOINT_RESTORE, else ENOSYS
#endif

namespace shmkeep {
namespace {

Napi::Object MsgStatObject(Napi::Env env, int id, const struct msqid_ds& ds) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", id);
  o.Set("key", Napi::Number::New(env, static_cast<uint32_t>(ds.msg_perm.__key)));
  o.Set("mode", Napi::Number::New(env, ds.msg_perm.mode));
  o.Set("uid", Napi::Number::New(env, ds.msg_perm.uid));
  o.Set("gid", Napi::Number::New(env, ds.msg_perm.gid));
  o.Set("cuid", Napi::Number::New(env, ds.msg_perm.cuid));
  o.Set("cgid", Napi::Number::New(env, ds.msg_perm.cgid));
  o.Set("cbytes", Napi::Number::New(env, static_cast<double>(ds.__msg_cbytes)));
  o.Set("qnum", Napi::Number::New(env, static_cast<double>(ds.msg_qnum)));
  o.Set("qbytes", Napi::Number::New(env, static_cast<double>(ds.msg_qbytes)));
  o.Set("lspid", Napi::Number::New(env, ds.msg_lspid));
  o.Set("lrpid", Napi::Number::New(env, ds.msg_lrpid));
  o.Set("stime", Napi::Number::New(env, static_cast<double>(ds.msg_stime)));
  o.Set("rtime", Napi::Number::New(env, static_cast<double>(ds.msg_rtime)));
  o.Set("ctime", Napi::Number::New(env, static_cast<double>(ds.msg_ctime)));
  return o;
}

#define AS_IDENTITY(uidArg, gidArg)            \
  ThreadIdentity as(I64(uidArg), I64(gidArg)); \
  if (as.error()) ThrowErrno(env, as.failedSyscall(), as.error())

// msgGet(key, flags, uid, gid) -> id (created as uid/gid when given).
Napi::Value Get(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id, err = 0;
  {
    AS_IDENTITY(info[2], info[3]);
    id = msgget(static_cast<key_t>(U32(info[0])), I32(info[1]));
    if (id < 0) err = errno;
  }
  if (id < 0) ThrowErrno(env, "msgget", err);
  return Napi::Number::New(env, id);
}

// msgStat(id, uid, gid): IPC_STAT needs read permission.
Napi::Value Stat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  struct msqid_ds ds;
  int rc, err = 0;
  {
    AS_IDENTITY(info[1], info[2]);
    rc = msgctl(id, IPC_STAT, &ds);
    if (rc < 0) err = errno;
  }
  if (rc < 0) ThrowErrno(env, "msgctl", err);
  return MsgStatObject(env, id, ds);
}

// See shm.cc's List for the fallback to MSG_STAT.
uint32_t StatAll(Napi::Env env, Napi::Array queues, int maxIndex, int cmd) {
  uint32_t n = 0;
  for (int index = 0; index <= maxIndex; index++) {
    struct msqid_ds ds;
    int id = msgctl(index, cmd, &ds);
    if (id < 0) continue;
    queues.Set(n++, MsgStatObject(env, id, ds));
  }
  return n;
}

Napi::Value List(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct msginfo mi;
  int maxIndex = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&mi));
  if (maxIndex < 0) ThrowErrno(env, "msgctl", errno);
  Napi::Array queues = Napi::Array::New(env);
  bool statAny = true;
  // MSG_INFO puts the number of queues in msgpool.
  if (StatAll(env, queues, maxIndex, MSG_STAT_ANY) == 0 && mi.msgpool > 0) {
    statAny = false;
    StatAll(env, queues, maxIndex, MSG_STAT);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("queues", queues);
  out.Set("statAny", Napi::Boolean::New(env, statAny));
  out.Set("usedIds", Napi::Number::New(env, mi.msgpool));
  return out;
}

// msgSend(id, type, data, flags, uid, gid) -> true, or false when the queue is
// full (EAGAIN). Always IPC_NOWAIT.
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  long type = static_cast<long>(I64(info[1]));
  Napi::Buffer<char> data = info[2].As<Napi::Buffer<char>>();
  std::vector<char> buf(sizeof(long) + data.Length());
  memcpy(buf.data(), &type, sizeof(long));
  if (data.Length()) memcpy(buf.data() + sizeof(long), data.Data(), data.Length());
  int rc, err = 0;
  {
    AS_IDENTITY(info[4], info[5]);
    rc = msgsnd(id, buf.data(), data.Length(), I32(info[3]) | IPC_NOWAIT);
    if (rc < 0) err = errno;
  }
  if (rc < 0 && err == EAGAIN) return Napi::Boolean::New(env, false);
  if (rc < 0) ThrowErrno(env, "msgsnd", err);
  return Napi::Boolean::New(env, true);
}

// msgSendAll(id, buf, types[], offsets[], sizes[], uid, gid) -> how many were
// sent: message i is sizes[i] bytes of buf at offsets[i], of type types[i],
// sent in order with IPC_NOWAIT under one identity switch (a restore sends
// thousands: one switch and one call each would cost more than the sends).
// Stops at the first full queue (EAGAIN: the count tells the caller); throws
// on any other error.
Napi::Value SendAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  Napi::Buffer<char> data = info[1].As<Napi::Buffer<char>>();
  Napi::Array types = info[2].As<Napi::Array>(), offsets = info[3].As<Napi::Array>(), sizes = info[4].As<Napi::Array>();
  const uint32_t n = types.Length();
  std::vector<long> t(n);
  std::vector<size_t> at(n), len(n);
  size_t biggest = 0;
  for (uint32_t i = 0; i < n; i++) {
    t[i] = static_cast<long>(I64(types.Get(i)));
    at[i] = static_cast<size_t>(I64(offsets.Get(i)));
    len[i] = static_cast<size_t>(I64(sizes.Get(i)));
    if (at[i] > data.Length() || len[i] > data.Length() - at[i]) throw Napi::RangeError::New(env, "msgSendAll: a message lies outside the buffer");
    biggest = std::max(biggest, len[i]);
  }
  std::vector<char> buf(sizeof(long) + biggest);
  uint32_t sent = 0;
  int err = 0;
  {
    AS_IDENTITY(info[5], info[6]);
    while (sent < n) {
      memcpy(buf.data(), &t[sent], sizeof(long));
      if (len[sent]) memcpy(buf.data() + sizeof(long), data.Data() + at[sent], len[sent]);
      if (msgsnd(id, buf.data(), len[sent], IPC_NOWAIT) < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      sent++;
    }
  }
  if (err && err != EAGAIN) ThrowErrno(env, "msgsnd", err);
  return Napi::Number::New(env, sent);
}

// msgReceive(id, type, maxSize, flags, uid, gid) -> {type, data}, or null when
// no message matches (ENOMSG). Always IPC_NOWAIT. With MSG_COPY in flags,
// `type` is a 0-based position and the message stays in the queue.
Napi::Value Receive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  long type = static_cast<long>(I64(info[1]));
  size_t maxSize = static_cast<size_t>(I64(info[2]));
  int flags = I32(info[3]) | IPC_NOWAIT;
  // zeroed: MSG_COPY reads the buffer in before writing it.
  std::vector<char> buf(sizeof(long) + maxSize, 0);
  ssize_t n;
  int err = 0;
  {
    AS_IDENTITY(info[4], info[5]);
    n = msgrcv(id, buf.data(), maxSize, type, flags);
    if (n < 0) err = errno;
  }
  if (n < 0 && err == ENOMSG) return env.Null();
  if (n < 0) ThrowErrno(env, "msgrcv", err);
  long got;
  memcpy(&got, buf.data(), sizeof(long));
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::Number::New(env, static_cast<double>(got)));
  o.Set("data", Napi::Buffer<char>::Copy(env, buf.data() + sizeof(long), static_cast<size_t>(n)));
  return o;
}

// msgCopyAll(id, bufSize, firstSize, uid, gid) -> {before, after, types[],
// sizes[], data}: IPC_STAT, then every message by position with MSG_COPY
// until ENOMSG, then IPC_STAT again — one pass under one identity; whether
// the pass is a true picture of the queue (the stats agree) is for the caller
// to decide. `data` is every message's bytes, one after another.
// MSG_COPY makes the kernel read in and allocate a whole buffer per call:
// each message is tried with `firstSize` (the caller's guess) and, only when
// it is longer (E2BIG, nothing taken), again with `bufSize`.
Napi::Value CopyAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  size_t bufSize = static_cast<size_t>(I64(info[1]));
  size_t firstSize = std::min(bufSize, static_cast<size_t>(I64(info[2])));
  std::vector<char> buf(sizeof(long) + bufSize, 0);
  std::vector<char> data;
  std::vector<long> types;
  std::vector<size_t> sizes;
  struct msqid_ds before, after;
  const char* failed = nullptr;
  int err = 0;
  {
    AS_IDENTITY(info[3], info[4]);
    if (msgctl(id, IPC_STAT, &before) < 0) {
      failed = "msgctl";
      err = errno;
    }
    for (long index = 0; !failed; index++) {
      ssize_t n = msgrcv(id, buf.data(), firstSize, index, MSG_COPY | IPC_NOWAIT);
      if (n < 0 && errno == E2BIG) n = msgrcv(id, buf.data(), bufSize, index, MSG_COPY | IPC_NOWAIT);
      if (n < 0) {
        if (errno != ENOMSG) { failed = "msgrcv"; err = errno; }
        break;
      }
      long type;
      memcpy(&type, buf.data(), sizeof(long));
      types.push_back(type);
      sizes.push_back(static_cast<size_t>(n));
      data.insert(data.end(), buf.data() + sizeof(long), buf.data() + sizeof(long) + n);
    }
    if (!failed && msgctl(id, IPC_STAT, &after) < 0) {
      failed = "msgctl";
      err = errno;
    }
  }
  if (failed) ThrowErrno(env, failed, err);
  Napi::Array t = Napi::Array::New(env, types.size()), s = Napi::Array::New(env, sizes.size());
  for (uint32_t i = 0; i < types.size(); i++) {
    t.Set(i, Napi::Number::New(env, static_cast<double>(types[i])));
    s.Set(i, Napi::Number::New(env, static_cast<double>(sizes[i])));
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("before", MsgStatObject(env, id, before));
  o.Set("after", MsgStatObject(env, id, after));
  o.Set("types", t);
  o.Set("sizes", s);
  o.Set("data", Napi::Buffer<char>::Copy(env, data.data(), data.size()));
  return o;
}

// msgSet(id, uid|-1, gid|-1, mode|-1, qbytes|-1, asUid, asGid): IPC_SET of the
// fields given (owner, creator or CAP_SYS_ADMIN; a qbytes above kernel.msgmnb
// needs CAP_SYS_RESOURCE). IPC_SET reads uid, gid, mode and qbytes; the
// current ones come from IPC_STAT (read permission), not needed when all four
// are given.
Napi::Value Set(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = I32(info[0]);
  int64_t uid = I64(info[1]), gid = I64(info[2]), mode = I64(info[3]), qbytes = I64(info[4]);
  int err = 0;
  {
    AS_IDENTITY(info[5], info[6]);
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    bool all = uid >= 0 && gid >= 0 && mode >= 0 && qbytes >= 0;
    if (msgctl(id, IPC_STAT, &ds) != 0 && !all) {
      err = errno;
    } else {
      if (uid >= 0) ds.msg_perm.uid = static_cast<uid_t>(uid);
      if (gid >= 0) ds.msg_perm.gid = static_cast<gid_t>(gid);
      if (mode >= 0) ds.msg_perm.mode = static_cast<unsigned short>(mode);
      if (qbytes >= 0) ds.msg_qbytes = static_cast<msglen_t>(qbytes);
      if (msgctl(id, IPC_SET, &ds) != 0) err = errno;
    }
  }
  if (err) ThrowErrno(env, "msgctl", err);
  return env.Undefined();
}

// msgRemove(id, asUid, asGid): IPC_RMID (wakes every waiter with EIDRM).
Napi::Value Remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rc, err = 0;
  {
    AS_IDENTITY(info[1], info[2]);
    rc = msgctl(I32(info[0]), IPC_RMID, nullptr);
    if (rc != 0) err = errno;
  }
  if (rc != 0) ThrowErrno(env, "msgctl", err);
  return env.Undefined();
}

// IPC_INFO (the limits: kernel.msgmax, msgmnb, msgmni) and MSG_INFO (usage).
Napi::Value Limits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct msginfo limits, usage;
  if (msgctl(0, IPC_INFO, reinterpret_cast<struct msqid_ds*>(&limits)) < 0) ThrowErrno(env, "msgctl", errno);
  int maxIndex = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&usage));
  if (maxIndex < 0) ThrowErrno(env, "msgctl", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("msgmax", limits.msgmax);
  o.Set("msgmnb", limits.msgmnb);
  o.Set("msgmni", limits.msgmni);
  // MSG_INFO: msgpool = queues, msgmap = messages, msgtql = bytes of messages.
  o.Set("usedIds", usage.msgpool);
  o.Set("messages", usage.msgmap);
  o.Set("bytes", usage.msgtql);
  o.Set("maxIndex", maxIndex);
  return o;
}

}  // namespace

void InitMsg(Napi::Env env, Napi::Object exports) {
  exports.Set("msgGet", Napi::Function::New(env, Get, "msgGet"));
  exports.Set("msgStat", Napi::Function::New(env, Stat, "msgStat"));
  exports.Set("msgList", Napi::Function::New(env, List, "msgList"));
  exports.Set("msgSend", Napi::Function::New(env, Send, "msgSend"));
  exports.Set("msgSendAll", Napi::Function::New(env, SendAll, "msgSendAll"));
  exports.Set("msgReceive", Napi::Function::New(env, Receive, "msgReceive"));
  exports.Set("msgCopyAll", Napi::Function::New(env, CopyAll, "msgCopyAll"));
  exports.Set("msgSet", Napi::Function::New(env, Set, "msgSet"));
  exports.Set("msgRemove", Napi::Function::New(env, Remove, "msgRemove"));
  exports.Set("msgLimits", Napi::Function::New(env, Limits, "msgLimits"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("MSG_COPY", Napi::Number::New(env, MSG_COPY));
  c.Set("MSG_EXCEPT", Napi::Number::New(env, MSG_EXCEPT));
  c.Set("MSG_NOERROR", Napi::Number::New(env, MSG_NOERROR));
  exports.Set("msgConstants", c);
}

}  // namespace shmkeep
