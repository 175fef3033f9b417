#!/bin/bash
# The whole plinth-jobs job suite (agent/jobs/tests/jobs) with the agent unprivileged:
# the suite's test binary runs as uid 65534 (nobody) with PLINTH_TEST_RUNNER_SOCKET
# set, so every job goes through a real plinth-runner running as root, as the packaged
# units run them (docs/packaging.md, "Privileges"). Skips, saying why, without root,
# runc or busybox.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

[ "$(id -u)" = 0 ] || { echo "SKIP unprivileged-jobs: plinth-runner needs root"; exit 0; }
command -v runc >/dev/null || { echo "SKIP unprivileged-jobs: runc is not installed"; exit 0; }
[ -x /bin/busybox ] || { echo "SKIP unprivileged-jobs: /bin/busybox is not installed"; exit 0; }
command -v setpriv >/dev/null || { echo "SKIP unprivileged-jobs: setpriv (util-linux) is missing"; exit 0; }

"$CARGO" build --quiet -p plinth-runner --bins
SUITE=$("$CARGO" test --quiet -p plinth-jobs --test jobs --no-run --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "jobs" and m.get("executable"):
        print(m["executable"])')

BASE=$(mktemp -d /tmp/plinth-unprivileged.XXXXXX)
PARENT=plinth-unpriv-$$
RUNNER_PID=
cleanup() {
    # `|| true`: under `set -e` a failing last command of an `&&` list ends the trap, and
    # a runner stopped by SIGTERM makes `wait` return 143, which would become the
    # script's status although every test passed.
    if [ -n "$RUNNER_PID" ]; then
        kill "$RUNNER_PID" 2>/dev/null || true
        wait "$RUNNER_PID" 2>/dev/null || true
    fi
    rm -rf "$BASE"
    for controller in memory cpu cpuacct pids cpuset blkio devices freezer systemd ""; do
        rmdir "/sys/fs/cgroup/$controller/$PARENT" 2>/dev/null || true
    done
}
trap cleanup EXIT
chmod 755 "$BASE"
mkdir -p "$BASE/state" "$BASE/cdi" "$BASE/run"
# The agent's state belongs to the agent user. The CDI directory is writable by it only
# because the suite writes its own fixture spec there (a packaged host's is root's).
chown 65534:65534 "$BASE/state" "$BASE/cdi"
install -m 755 "$SUITE" "$BASE/jobs-suite"
cat > "$BASE/runner.toml" <<TOML
socket = "$BASE/run/runner.sock"
socket_group = "65534"
agent_user = "65534"
state_dir = "$BASE/state"
image_dirs = ["$BASE/state"]
runner_dir = "$BASE/runner"
runtime_root = "$BASE/runc"
cdi_dirs = ["$BASE/cdi"]
cgroup_parent = "$PARENT"
TOML
"$TARGET/debug/plinth-runner" --config "$BASE/runner.toml" run 2>"$BASE/runner.log" &
RUNNER_PID=$!
for _ in $(seq 1 500); do [ -S "$BASE/run/runner.sock" ] && break; sleep 0.02; done
[ -S "$BASE/run/runner.sock" ] || { cat "$BASE/runner.log"; exit 1; }

echo "running the job suite as uid 65534 against plinth-runner (root)"
status=0
setpriv --reuid=65534 --regid=65534 --clear-groups \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$BASE/state" TMPDIR="$BASE/state" \
    PLINTH_TEST_RUNNER_SOCKET="$BASE/run/runner.sock" PLINTH_TEST_CGROUP_PARENT="$PARENT" \
    PLINTH_TEST_CDI_DIR="$BASE/cdi" "$BASE/jobs-suite" --test-threads=2 || status=$?
if [ "$status" != 0 ]; then
    echo "--- plinth-runner log"; tail -50 "$BASE/runner.log"
fi
exit "$status"
