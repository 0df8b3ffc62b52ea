#!/bin/sh
# A shell entrypoint that keeps the app's SysV shared memory across container
# restarts with `shmkeep restore` and `shmkeep snapshot` — for images whose
# entrypoint has to stay a script. (Where it does not, `shmkeep run` does all
# of this, plus periodic checkpoints, a stop deadline and orphan reaping: see
# examples/docker/Dockerfile.)
#
#   COPY examples/shell-entrypoint/entrypoint.sh /entrypoint.sh
#   VOLUME /var/lib/shmkeep
#   ENTRYPOINT ["/entrypoint.sh"]          # exec form: this script is PID 1
#   CMD ["/app/server", "serve"]           # exec form: no extra shell between
#
# What a script must get right, because it is PID 1 of the container:
#  - PID 1 gets no signal whose disposition is the default: without the traps
#    below, `docker stop`'s TERM is dropped, the app runs on until the SIGKILL
#    and no snapshot is ever taken.
#  - The app runs in the background (`"$@" &`, no `sh -c`: TERM must reach the
#    app itself, not a shell around it), so the script outlives it and can
#    snapshot after it stopped. That is also why the app is not started with
#    `exec`: exec would replace this script, and nothing would be left to take
#    the snapshot. `exec` belongs in a wrapper that prepares things and then
#    hands over to this script (`exec /entrypoint.sh "$@"`), and below where
#    the container is asked for a plain command instead of the app.
#  - `wait` returns early (status > 128) whenever a trapped signal arrives:
#    wait again until the app has really exited (not `kill -0`: the shell may
#    have reaped the app already and only keeps its status).
#  - The snapshot must finish before `docker stop -t N` (Kubernetes:
#    terminationGracePeriodSeconds) runs out: the app must stop well within N,
#    leaving room for the snapshot (`shmkeep run` computes this for you and logs
#    it; here it is up to the app).
#  - Orphans the app leaves are re-parented to PID 1, and this script does not
#    reap them: run the container with `docker run --init` (tini) if the app
#    leaves any.
#
# Environment: SHMKEEP_STATE_DIR (default /var/lib/shmkeep) and every other
# SHMKEEP_* option (SHMKEEP_KEEP, SHMKEEP_KEY, ...), read by shmkeep itself.
# Exit status: the app's (128 + signal if a signal ended it); 125 if the
# restore failed (the app is not started: starting it on empty state and then
# snapshotting would bury the saved state); 124 if the snapshot failed.
set -u

export SHMKEEP_STATE_DIR="${SHMKEEP_STATE_DIR:-/var/lib/shmkeep}"
# A key that is live already is kept, not overwritten. In Docker every start is
# a new IPC namespace and there is never one; in Kubernetes a container
# restarted inside its pod finds the pod's segments still there, newer than any
# snapshot (with the default, fail, the restore would fail and the container
# would crash-loop).
export SHMKEEP_ON_CONFLICT="${SHMKEEP_ON_CONFLICT:-skip}"

if [ "$#" -eq 0 ]; then
  echo "entrypoint: no command (CMD) given" >&2
  exit 2
fi

# `docker run IMAGE sh` (or bash) for a look inside: no restore, no snapshot.
case "$1" in
  sh | bash | /bin/sh | /bin/bash) exec "$@" ;;
esac

# A stop that arrives before the app runs is remembered, not lost.
app=
stopping=
interrupted=
forward() { # forward SIGNAL: pass a signal on to the app
  interrupted=1
  [ -n "$app" ] && kill "-$1" "$app" 2>/dev/null
  return 0
}
trap 'stopping=TERM; forward TERM' TERM
trap 'stopping=INT; forward INT' INT
trap 'forward HUP' HUP
trap 'forward USR1' USR1
trap 'forward USR2' USR2

# 1. Restore before the app starts (an empty state dir is a normal first start).
if ! shmkeep restore; then
  echo "entrypoint: shmkeep restore failed: the app is not started (see \`shmkeep verify\`)" >&2
  exit 125
fi
if [ -n "$stopping" ]; then
  echo "entrypoint: SIG$stopping arrived before the app started: not starting it" >&2
  [ "$stopping" = INT ] && exit 130
  exit 143
fi

# 2. Start the app in the background and wait for it to end.
"$@" &
app=$!
[ -n "$stopping" ] && forward "$stopping" # the stop came between the check and here
while :; do
  interrupted=
  wait "$app"
  status=$?
  # A trapped signal cuts `wait` short (status > 128) whether or not the app
  # has ended: ask again. Asking about an app that has ended gives its status
  # (the shell keeps it), so this loop ends with the app's real status.
  if [ -n "$interrupted" ] && [ "$status" -gt 128 ]; then continue; fi
  break
done
echo "entrypoint: app exited with status $status" >&2

# 3. Snapshot every segment once the app has stopped writing.
shmkeep snapshot
saved=$?
case "$saved" in
  0) ;;
  3) echo "entrypoint: the snapshot was written beside CURRENT, not made CURRENT (see the log above)" >&2 ;;
  *)
    echo "entrypoint: shmkeep snapshot failed (the app exited with status $status)" >&2
    exit 124
    ;;
esac
exit "$status"
