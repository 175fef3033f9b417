#!/usr/bin/env bash
# What an idle plinth-agent costs its host, measured as a sysadmin would: start a
# release agent, let it settle, then report over a window (default 60 s) its CPU time
# (utime+stime from /proc/PID/stat), wake-ups per second (voluntary + involuntary
# context switches summed over every thread in /proc/PID/task/*/status), RSS and open
# file descriptors. Two runs: the default configuration, and the example plugins
# (pricing, scheduling, reporting; signed) installed with jobs enabled.
#
#   make bench-idle                       # builds the release binaries first
#   benches/idle-agent.sh [--bin DIR] [--seconds N] [--settle N] [--only default|plugins]
#
# Targets (issue #19, on the 2-core CI machine): <= 0.1% of one core, <= 5 wake-ups/s,
# RSS <= 30 MB. The numbers are recorded in docs/ARCHITECTURE.md ("Idle cost").
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
seconds=60
settle=15
only=
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--settle) settle=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	*) echo "usage: $0 [--bin DIR] [--seconds N] [--settle N] [--only default|plugins]" >&2; exit 2 ;;
	esac
done
for tool in plinth-agent plinthctl; do
	[ -x "$bin/$tool" ] || { echo "no $bin/$tool: build it first (cargo build --release --bins)" >&2; exit 1; }
done
hz=$(getconf CLK_TCK)
work=$(mktemp -d -t plinth-idle.XXXXXX)
agent=
cleanup() {
	if [ -n "$agent" ]; then kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "TID SWITCHES" per thread; a thread that ends inside the window takes its count with
# it (the settle time outlasts tokio's 10 s blocking-thread keep-alive so none should).
switches() {
	local task
	for task in /proc/"$1"/task/*; do
		awk -v tid="${task##*/}" '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2}
			END {print tid, n + 0}' "$task/status" 2>/dev/null || true
	done
}
# Switches in the window: per thread, the end count minus the start count (0 for a
# thread born in the window).
switch_delta() {
	awk 'NR == FNR {start[$1] = $2; next} {d += $2 - start[$1]} END {print d + 0}' "$1" "$2"
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# run LABEL CONFIG_EXTRA SETUP_FUNCTION
run() {
	local label=$1 extra=$2 setup=$3 dir="$work/$1"
	mkdir -p "$dir"
	cat >"$dir/agent.toml" <<TOML
[agent]
state_dir = "$dir/state"
runtime_dir = "$dir/run"
log_target = "stderr"
$extra
TOML
	"$bin/plinth-agent" run --config "$dir/agent.toml" 2>"$dir/agent.log" &
	agent=$!
	for _ in $(seq 300); do
		"$bin/plinthctl" --socket "$dir/run/admin.sock" status >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$bin/plinthctl" --socket "$dir/run/admin.sock" status >/dev/null ||
		{ echo "agent did not start; log:" >&2; cat "$dir/agent.log" >&2; exit 1; }
	$setup "$dir"
	sleep "$settle"
	local t0 t1
	t0=$(cpu_ticks "$agent"); switches "$agent" >"$dir/switches.0"
	sleep "$seconds"
	t1=$(cpu_ticks "$agent"); switches "$agent" >"$dir/switches.1"
	local threads fds rss
	threads=$(ls "/proc/$agent/task" | wc -l)
	fds=$(ls "/proc/$agent/fd" | wc -l)
	rss=$(rss_kib "$agent")
	awk -v label="$label" -v dt=$((t1 - t0)) -v ds="$(switch_delta "$dir/switches.0" "$dir/switches.1")" -v secs="$seconds" -v hz="$hz" \
		-v rss="$rss" -v fds="$fds" -v threads="$threads" 'BEGIN {
		printf "%-8s cpu %5.3f%% of one core (%d ticks in %d s)  wake-ups %6.2f/s  rss %5.1f MB  fds %d  threads %d\n",
			label, 100 * dt / hz / secs, dt, secs, ds / secs, rss / 1024, fds, threads
	}'
	kill "$agent"; wait "$agent" 2>/dev/null || true; agent=
}

no_setup() { :; }

install_plugins() {
	local dir=$1
	local ctl=("$bin/plinthctl" --socket "$dir/run/admin.sock")
	for kind in pricing scheduling reporting; do
		"${ctl[@]}" plugin install "$work/plugins/$kind.plinthpkg" >/dev/null
	done
	"${ctl[@]}" plugin list | sed 's/^/    /'
}

if [ "$only" != plugins ]; then
	run default "" no_setup
fi
if [ "$only" != default ]; then
	wasm_dir=target/wasm-examples/wasm32-wasip2/release
	if [ ! -f "$wasm_dir/plinth_example_pricing.wasm" ]; then
		rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
		CARGO_TARGET_DIR=target/wasm-examples cargo build -q --release --target wasm32-wasip2 \
			--manifest-path plugins/examples/Cargo.toml
	fi
	mkdir -p "$work/plugins"
	key=$("$bin/plinthctl" plugin keygen "$work/plugins/author.key" | tail -n 1)
	wit=$(sed -n 's/^package plinth:policy@\([0-9.]*\);.*/\1/p' plugins/wit/*.wit | sort -V | tail -n 1)
	for kind in pricing scheduling reporting; do
		printf 'name = "example-%s"\nversion = "1.0.0"\nkind = "%s"\nwit = "plinth:policy@%s"\nwasm_sha256 = ""\n' \
			"$kind" "$kind" "$wit" >"$work/plugins/$kind.toml"
		"$bin/plinthctl" plugin sign --manifest "$work/plugins/$kind.toml" \
			--wasm "$wasm_dir/plinth_example_$kind.wasm" --key "$work/plugins/author.key" \
			-o "$work/plugins/$kind.plinthpkg" >/dev/null
	done
	run plugins "[plugins]
trusted_keys = [\"$key\"]
[jobs]
enabled = true" install_plugins
fi
