#!/bin/bash
# The install test a sysadmin would otherwise do by hand (docs/packaging.md, "Install
# test"): a debootstrapped Debian 12 (cached in /var/cache/plinth-ci), booted with
# systemd-nspawn so that systemd is PID 1, driven with nsenter:
#
#   install the .deb (enabled, not started) -> start, ready through the notify socket ->
#   plinthctl status for a member of group plinth, refused for others -> the agent's
#   structured logs in journald -> a busybox job through plinth-runner -> upgrade to a
#   newer build with an edited config, state and a running job (all survive, services
#   restarted) -> remove (config and state kept) -> purge (deleted) -> reinstall.
#
# Then the .rpm: file list and scriptlets checked, installed into an alternate root.
# Needs root, systemd-nspawn, debootstrap and the packages of `make dist` in target/dist.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/target/dist
CACHE=${PLINTH_CI_CACHE:-/var/cache/plinth-ci}
BASE_PACKAGES=systemd,systemd-sysv,dbus,runc,busybox-static,libtss2-esys-3.0.2-0,libtss2-tcti-device0,libtss2-tctildr0,libtss2-mu0,libtss2-sys1
T0=$(date +%s)

skip() { echo "SKIP install-test: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn (systemd-container) is not installed"
command -v debootstrap >/dev/null || skip "debootstrap is not installed"
DEB=$(ls "$OUT"/plinth_*.deb 2>/dev/null | head -1)
RPM=$(ls "$OUT"/plinth-*.rpm 2>/dev/null | head -1)
[ -n "$DEB" ] && [ -n "$RPM" ] || { echo "no packages in $OUT: run make dist first"; exit 1; }

step() { echo "== $(( $(date +%s) - T0 ))s: $*"; }
fail() {
    echo "FAIL install-test: $*"
    # PLINTH_INSTALL_TEST_HOLD=SECONDS keeps the booted container for a look.
    if [ -n "${PLINTH_INSTALL_TEST_HOLD:-}" ] && [ -n "${LEADER:-}" ]; then
        echo "holding the container: nsenter -t $LEADER -m -u -i -n -p -C"
        sleep "$PLINTH_INSTALL_TEST_HOLD"
    fi
    exit 1
}

# 1. The cached Debian 12 root file system (its package list is part of its name).
KEY=$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12)
BASE=$CACHE/bookworm-$KEY
if [ ! -d "$BASE" ]; then
    step "debootstrap bookworm into $BASE (cached for later runs)"
    mkdir -p "$CACHE"
    rm -rf "$BASE.tmp"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$BASE.tmp" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log"; fail "debootstrap failed"; }
    mv "$BASE.tmp" "$BASE"
fi

WORK=$(mktemp -d /var/tmp/plinth-install.XXXXXX)
NSPAWN_PID=
cleanup() {
    if [ -n "$NSPAWN_PID" ]; then
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
step "copying the root file system"
cp -a "$BASE" "$WORK/root"
: > "$WORK/root/etc/machine-id"
echo plinth-ci > "$WORK/root/etc/hostname"
mkdir -p "$WORK/pkgs"
cp "$DEB" "$WORK/pkgs/plinth.deb"

# A newer build of the same package: the same staged tree with a higher revision.
step "building the upgrade package (revision 2)"
PATH="$ROOT/target/dist-tools/bin:$PATH" cargo-deb -p plinth --no-build --no-strip --locked --fast \
    --deb-revision 2 -o "$WORK/pkgs/plinth-2.deb" >"$WORK/cargo-deb.log" 2>&1 || { cat "$WORK/cargo-deb.log"; fail "cargo-deb"; }

# A busybox OCI image for the job (one uncompressed layer).
python3 - "$WORK/pkgs/busybox" <<'PY'
import hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for d in ["bin", "etc", "tmp"]:
        info = tarfile.TarInfo(d); info.type = tarfile.DIRTYPE; info.mode = 0o755; tar.addfile(info)
    data = open("/bin/busybox", "rb").read()
    info = tarfile.TarInfo("bin/busybox"); info.size = len(data); info.mode = 0o755
    tar.addfile(info, io.BytesIO(data))
    for applet in ["sh", "echo", "sleep", "cat"]:
        info = tarfile.TarInfo(f"bin/{applet}"); info.type = tarfile.SYMTYPE; info.linkname = "busybox"; tar.addfile(info)
    passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
    info = tarfile.TarInfo("etc/passwd"); info.size = len(passwd); info.mode = 0o644
    tar.addfile(info, io.BytesIO(passwd))
layer = layer.getvalue()
l = blob(layer)
config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": [l["digest"]]}}).encode())
manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **l}]}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    **manifest, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(f"{out}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{out}/oci-layout", "w"))
PY
job_spec() { # command...
    python3 -c 'import json,sys; print(json.dumps({"format": "plinth-job/1",
        "image": {"source": "oci-layout", "path": "/var/lib/plinth/import/busybox", "reference": "latest"},
        "command": sys.argv[1:], "resources": {"memory_bytes": 67108864, "pids": 64, "max_duration_s": 600}}))' "$@"
}
# (A little work, so the meter has CPU time and memory to record.)
job_spec /bin/sh -c 'echo hello from the runner; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done' \
    > "$WORK/pkgs/hello.json"
job_spec /bin/sh -c "sleep 25; echo survived" > "$WORK/pkgs/long.json"

step "booting Debian 12 with systemd-nspawn"
systemd-nspawn --quiet --register=no --keep-unit -b -D "$WORK/root" \
    --bind-ro="$WORK/pkgs:/pkgs" --capability=all --system-call-filter="@mount keyctl bpf" \
    >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
LEADER=
for _ in $(seq 1 300); do
    for pid in $(pgrep -P "$NSPAWN_PID" 2>/dev/null) ; do
        [ "$(cat /proc/$pid/comm 2>/dev/null)" = systemd ] && LEADER=$pid
    done
    [ -n "$LEADER" ] && break
    sleep 0.1
done
[ -n "$LEADER" ] || { cat "$WORK/console.log"; fail "the container's systemd never started"; }
in_ct() { nsenter -t "$LEADER" -m -u -i -n -p -C -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
state=
for _ in $(seq 1 600); do
    state=$(in_ct systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
case "$state" in running|degraded) ;; *) cat "$WORK/console.log"; fail "the container did not boot ($state)" ;; esac
step "booted ($state)"
# On a host with cgroup v1 controllers (this CI machine's hybrid layout), nspawn hands
# them to the container read-only: the container's systemd may not delegate v1
# controllers. plinth-runner creates each job's cgroup in them, as it does on a real
# v1 host, so they are made writable inside the container's mount namespace (before the
# runner starts: its unit's namespace copies them). A v2-only host needs nothing.
while read -r _ mnt fstype opts _; do
    case "$fstype,$opts" in
        cgroup,ro,*) nsenter -t "$LEADER" -m -- mount -o remount,bind,rw "$mnt" ||
            fail "cannot make $mnt writable in the container" ;;
    esac
done < <(nsenter -t "$LEADER" -m -p -- cat /proc/1/mounts)

# 2. Install: enabled, not started.
T_INSTALL=$(date +%s.%N)
in_ct dpkg -i /pkgs/plinth.deb >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg -i"; }
for unit in plinth-runner plinth-agent; do
    [ "$(in_ct systemctl is-enabled $unit 2>&1)" = enabled ] || fail "$unit is not enabled after install"
    [ "$(in_ct systemctl is-active $unit 2>&1)" = inactive ] || fail "$unit was started by the install"
done
in_ct getent passwd plinth >/dev/null || fail "no user plinth"
in_ct id -nG plinth | grep -qw tss || fail "plinth is not in group tss"
step "installed: user plinth, units enabled, not started"

# 3. Start; Type=notify: start returns when READY=1 arrived.
in_ct systemctl start plinth-runner plinth-agent || { in_ct journalctl -b --no-pager | tail -40; fail "start"; }
T_READY=$(date +%s.%N)
READY_MS=$(python3 -c "print(round(($T_READY - $T_INSTALL) * 1000))")
for unit in plinth-runner plinth-agent; do
    [ "$(in_ct systemctl is-active $unit)" = active ] || fail "$unit is not active"
done
[ "$(in_ct systemctl show -p User --value plinth-agent)" = plinth ] || fail "the agent does not run as plinth"
step "install to ready: ${READY_MS} ms"

# 4. plinthctl: a member of group plinth may, another user may not.
in_ct useradd -m -G plinth alice
in_ct useradd -m bob
in_ct runuser -u alice -- plinthctl status >"$WORK/status.txt" 2>&1 || { cat "$WORK/status.txt"; fail "plinthctl status as alice"; }
if in_ct runuser -u bob -- plinthctl status >"$WORK/status-bob.txt" 2>&1; then fail "plinthctl status worked for bob"; fi
grep -qi "denied\|permission" "$WORK/status-bob.txt" || { cat "$WORK/status-bob.txt"; fail "bob's refusal does not say why"; }
step "plinthctl status: alice (group plinth) ok; bob refused: $(head -1 "$WORK/status-bob.txt")"

# 5. Structured logs in journald.
in_ct journalctl -u plinth-agent -o json --no-pager > "$WORK/journal.json"
grep -q '"TARGET":"plinth_agent' "$WORK/journal.json" || { tail -5 "$WORK/journal.json"; fail "no structured agent logs in journald"; }
step "journald holds the agent's structured records ($(wc -l < "$WORK/journal.json") lines)"

# 6. A busybox job through the runner.
in_ct cp -r /pkgs/busybox /var/lib/plinth/import/busybox
in_ct chown -R plinth:plinth /var/lib/plinth/import/busybox
run_job() { in_ct runuser -u alice -- plinthctl jobs submit --wait "$1"; }
if ! run_job /pkgs/hello.json >"$WORK/job.txt" 2>&1; then
    cat "$WORK/job.txt"; in_ct journalctl -u plinth-runner -u plinth-agent --no-pager | tail -30
    fail "the busybox job failed"
fi
JOB=$(head -1 "$WORK/job.txt")
in_ct runuser -u alice -- plinthctl jobs logs "$JOB" >"$WORK/job-logs.txt" 2>&1 || true
grep -q "hello from the runner" "$WORK/job-logs.txt" || {
    cat "$WORK/job.txt" "$WORK/job-logs.txt"; in_ct runuser -u alice -- plinthctl jobs show "$JOB" || true
    fail "job output missing"
}
# Metered through the runner's supervisor from the job's cgroup (what receipts bill).
USAGE=$(in_ct runuser -u alice -- plinthctl jobs show "$JOB" | grep -E '^ *usage ') || fail "no usage for $JOB"
CPU_MS=$(sed -nE 's/.*cpu ([0-9]+) ms.*/\1/p' <<<"$USAGE")
PEAK_KIB=$(sed -nE 's/.*peak memory ([0-9]+) KiB.*/\1/p' <<<"$USAGE")
[ "${CPU_MS:-0}" -gt 0 ] && [ "${PEAK_KIB:-0}" -gt 0 ] ||
    fail "the job's cgroup was not metered ($USAGE)"
step "busybox job $JOB ran through plinth-runner, metered: $(sed -E 's/^ *usage +//' <<<"$USAGE")"

# 7. Upgrade with an edited config, state and a running job.
echo '# edited by the sysadmin' | in_ct tee -a /etc/plinth/agent.toml >/dev/null
LONG=$(in_ct runuser -u alice -- plinthctl jobs submit /pkgs/long.json | head -1)
for _ in $(seq 1 200); do
    in_ct runuser -u alice -- plinthctl jobs show "$LONG" | grep -q running && break; sleep 0.1
done
AGENT_PID=$(in_ct systemctl show -p MainPID --value plinth-agent)
RUNNER_PID=$(in_ct systemctl show -p MainPID --value plinth-runner)
in_ct dpkg -i --force-confold /pkgs/plinth-2.deb >"$WORK/dpkg2.log" 2>&1 || { cat "$WORK/dpkg2.log"; fail "upgrade"; }
grep -q "edited by the sysadmin" <(in_ct cat /etc/plinth/agent.toml) || fail "the edited config did not survive the upgrade"
[ "$(in_ct systemctl show -p MainPID --value plinth-agent)" != "$AGENT_PID" ] || fail "the agent was not restarted"
[ "$(in_ct systemctl show -p MainPID --value plinth-runner)" != "$RUNNER_PID" ] || fail "the runner was not restarted"
in_ct runuser -u alice -- plinthctl jobs show "$JOB" | grep -q succeeded || fail "the first job's state is gone"
for _ in $(seq 1 600); do
    in_ct runuser -u alice -- plinthctl jobs show "$LONG" | grep -qE "succeeded|failed|cancelled" && break; sleep 0.1
done
in_ct runuser -u alice -- plinthctl jobs show "$LONG" | grep -q succeeded || { in_ct runuser -u alice -- plinthctl jobs show "$LONG"; fail "the running job did not survive the upgrade"; }
in_ct runuser -u alice -- plinthctl jobs logs "$LONG" | grep -q survived || fail "the surviving job's output is missing"
step "upgrade: config kept, both services restarted, state kept, running job $LONG finished"

# 8. Remove keeps configuration and state; purge deletes them; reinstall works.
in_ct dpkg -r plinth >"$WORK/dpkg3.log" 2>&1 || { cat "$WORK/dpkg3.log"; fail "remove"; }
in_ct test -f /etc/plinth/agent.toml || fail "remove deleted the configuration"
in_ct test -d /var/lib/plinth/jobs || fail "remove deleted the state"
in_ct test ! -e /usr/bin/plinth-agent || fail "remove left the binary"
step "removed: configuration and state kept"
in_ct dpkg -P plinth >"$WORK/dpkg4.log" 2>&1 || { cat "$WORK/dpkg4.log"; fail "purge"; }
for path in /etc/plinth /var/lib/plinth /var/lib/plinth-runner; do
    in_ct test ! -e "$path" || fail "purge left $path"
done
step "purged: configuration and state deleted"
in_ct dpkg -i /pkgs/plinth.deb >"$WORK/dpkg5.log" 2>&1 || { cat "$WORK/dpkg5.log"; fail "reinstall"; }
in_ct systemctl start plinth-runner plinth-agent || fail "start after reinstall"
in_ct runuser -u alice -- plinthctl status >/dev/null || fail "plinthctl after reinstall"
step "reinstalled and running"

# 9. The .rpm: contents, scriptlets, an alternate root.
if command -v rpm >/dev/null; then
    rpm -qlp "$RPM" > "$WORK/rpm-files.txt"
    for path in /usr/bin/plinth-agent /usr/bin/plinth-runner /usr/bin/plinthctl \
        /usr/lib/systemd/system/plinth-agent.service /usr/lib/systemd/system/plinth-runner.service \
        /usr/lib/sysusers.d/plinth.conf /usr/lib/tmpfiles.d/plinth.conf /etc/plinth/agent.toml; do
        grep -qx "$path" "$WORK/rpm-files.txt" || fail "the rpm lacks $path"
    done
    rpm -qp --configfiles "$RPM" | grep -qx /etc/plinth/agent.toml || fail "agent.toml is not %config in the rpm"
    rpm -qp --scripts "$RPM" > "$WORK/rpm-scripts.txt"
    for needle in "preinstall" "postinstall" "preuninstall" "postuninstall"; do
        grep -q "$needle" "$WORK/rpm-scripts.txt" || fail "the rpm has no $needle scriptlet"
    done
    # The scriptlets run for real in the booted container, as rpm would run them: the
    # .deb purged, the payload unpacked, %pre and %post of a first install ($1 = 1),
    # an upgrade's %post ($1 = 2), then %preun and %postun of the last removal ($1 = 0).
    in_ct dpkg -P plinth >"$WORK/dpkg6.log" 2>&1 || { cat "$WORK/dpkg6.log"; fail "purge before the rpm"; }
    in_ct userdel plinth 2>/dev/null || true
    for tag in PREIN POSTIN PREUN POSTUN; do
        rpm -qp --qf "%{$tag}\n" "$RPM" > "$WORK/pkgs/$tag.sh"
    done
    (cd "$WORK/root" && rpm2cpio "$RPM" | cpio -idm --quiet) || fail "unpacking the rpm's payload"
    in_ct sh -e /pkgs/PREIN.sh 1 || fail "%pre"
    in_ct getent passwd plinth >/dev/null || fail "%pre did not create the user plinth"
    in_ct sh -e /pkgs/POSTIN.sh 1 || fail "%post"
    for unit in plinth-runner plinth-agent; do
        [ "$(in_ct systemctl is-enabled $unit 2>&1)" = enabled ] || fail "%post did not enable $unit"
        [ "$(in_ct systemctl is-active $unit 2>&1)" = inactive ] || fail "%post started $unit"
    done
    in_ct systemctl start plinth-runner plinth-agent || fail "start after the rpm's %post"
    in_ct runuser -u alice -- plinthctl status >/dev/null || fail "plinthctl after the rpm install"
    AGENT_PID=$(in_ct systemctl show -p MainPID --value plinth-agent)
    in_ct sh -e /pkgs/POSTIN.sh 2 || fail "%post of an upgrade"
    [ "$(in_ct systemctl show -p MainPID --value plinth-agent)" != "$AGENT_PID" ] ||
        fail "the rpm's upgrade %post did not restart the agent"
    in_ct sh -e /pkgs/PREUN.sh 0 || fail "%preun"
    in_ct sh -e /pkgs/POSTUN.sh 0 || fail "%postun"
    for unit in plinth-runner plinth-agent; do
        [ "$(in_ct systemctl is-enabled $unit 2>&1)" = disabled ] || fail "%preun did not disable $unit"
        [ "$(in_ct systemctl is-active $unit 2>&1)" = inactive ] || fail "%preun did not stop $unit"
    done
    in_ct test -f /etc/plinth/agent.toml || fail "the rpm's removal deleted the configuration"
    step "rpm scriptlets in the booted container: user, enable without start, restart on upgrade, disable and stop on removal"
    mkdir -p "$WORK/rpmroot"
    rpm --root "$WORK/rpmroot" --initdb
    rpm --root "$WORK/rpmroot" -i --nodeps --noscripts "$RPM"
    test -x "$WORK/rpmroot/usr/bin/plinth-runner" || fail "rpm install into the alternate root"
    # --nodeps: the alternate root holds only plinth, not the libraries it needs.
    rpm --root "$WORK/rpmroot" -V --nodeps plinth || fail "rpm -V in the alternate root"
    step "rpm: files, %config, scriptlets checked; installed and verified in an alternate root"
else
    echo "SKIP rpm checks: rpm is not installed"
fi
echo "install-test: passed in $(( $(date +%s) - T0 )) s (install to ready ${READY_MS} ms)"
