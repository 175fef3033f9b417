#!/usr/bin/env bash
# The network API under load, measured as an operator would: a release agent with its
# network API on loopback and a real wasm pricing plugin (the `misbehave` test plugin in
# its well-behaved mode: a fixed offer, so every quote takes the whole path: plugin call,
# node-key signature, SQLite insert, TLS), idle for a while, then `plinthctl bench-quotes`
# offering RATE quotes a second over CONNECTIONS keep-alive TLS connections.
# Reports the client's throughput and latency percentiles, and the agent's RSS and CPU
# (utime+stime from /proc/PID/stat) idle and under load.
#
#   make bench-quotes                     # builds the release binaries first
#   benches/quote-load.sh [--bin DIR] [--rate N] [--seconds N] [--connections N]
#
# Targets (issue #17, this 2-core machine): p99 under 2 ms at 1,000 quotes/s; RSS <= 30
# MB idle, CPU <= 0.1% idle. The numbers are recorded in docs/api.md ("Benchmark").
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
rate=1000
seconds=10
connections=4
idle=20
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--connections) connections=$2; shift 2 ;;
	--idle) idle=$2; shift 2 ;;
	*) echo "usage: $0 [--bin DIR] [--rate N] [--seconds N] [--connections N] [--idle N]" >&2; exit 2 ;;
	esac
done
for tool in plinth-agent plinthctl; do
	[ -x "$bin/$tool" ] || { echo "no $bin/$tool: build it first (cargo build --release --bins)" >&2; exit 1; }
done
wasm=target/wasm-examples/wasm32-wasip2/release/plinth_hostile_misbehave.wasm
if [ ! -f "$wasm" ]; then
	(cd plugins/examples && CARGO_TARGET_DIR=../../target/wasm-examples cargo build -q --release --target wasm32-wasip2)
fi
hz=$(getconf CLK_TCK)
work=$(mktemp -d -t plinth-quotes.XXXXXX)
agent=
cleanup() {
	if [ -n "$agent" ]; then kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pin=$("$bin/plinthctl" identity new --name bench --role market -o "$work/bench.pem" 2>/dev/null)
"$bin/plinthctl" plugin keygen "$work/author.key" >"$work/author.pub"
printf 'name = "fixed-pricing"\nversion = "1.0.0"\nkind = "pricing"\nwit = "plinth:policy@0.1.2"\nwasm_sha256 = ""\n' >"$work/pricing.toml"
mkdir -p "$work/state/plugins"
"$bin/plinthctl" plugin sign --manifest "$work/pricing.toml" --wasm "$wasm" --key "$work/author.key" \
	-o "$work/state/plugins/pricing.plinthpkg" >/dev/null
cat >"$work/agent.toml" <<TOML
[agent]
state_dir = "$work/state"
runtime_dir = "$work/run"
log_target = "stderr"
log_level = "warn"

[api]
listen = "127.0.0.1:$port"
rate_per_second = 100000
rate_burst = 100000
$pin

[plugins]
trusted_keys = ["$(cat "$work/author.pub")"]
TOML
PLINTH_METRICS_LISTEN="" "$bin/plinth-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 300); do
	"$bin/plinthctl" --socket "$work/run/admin.sock" status >/dev/null 2>&1 && break
	sleep 0.1
done
node_key=$(cat "$work/state/node.pub")
remote() { "$bin/plinthctl" --remote "https://127.0.0.1:$port" --identity "$work/bench.pem" --node-key "$node_key" "$@"; }
remote quote --client bench --gpus 0 >/dev/null 2>&1 # one quote: the plugin is warm

sleep 5
t0=$(cpu_ticks "$agent")
sleep "$idle"
t1=$(cpu_ticks "$agent")
idle_rss=$(rss_kib "$agent")
idle_cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$idle" 'BEGIN {printf "%.3f", 100 * t / hz / s}')

count=$((rate * seconds))
t0=$(cpu_ticks "$agent")
remote bench-quotes --client bench --count "$count" --rate "$rate" --connections "$connections" \
	--max-seconds $((seconds * 3)) --json >"$work/result.json"
t1=$(cpu_ticks "$agent")
load_rss=$(rss_kib "$agent")
wall=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$work/result.json")
load_cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$wall" 'BEGIN {printf "%.1f", 100 * t / hz / s}')

python3 - "$work/result.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
print(f"quotes: {r['ok']} ok, {r['refused']} refused, {r['errors']} errors in {r['seconds']:.2f} s "
      f"({r['per_second']:.0f}/s offered {$rate}/s over {$connections} connections)")
print(f"latency: p50 {r['p50_us']} µs, p90 {r['p90_us']} µs, p99 {r['p99_us']} µs, "
      f"p99.9 {r['p999_us']} µs, max {r['max_us']} µs")
if r["first_error"]:
    print("first error:", r["first_error"])
PY
echo "agent idle: RSS $((idle_rss / 1024)) MiB ($idle_rss KiB), CPU $idle_cpu% of one core over ${idle} s"
echo "agent under load: RSS $((load_rss / 1024)) MiB ($load_rss KiB), CPU $load_cpu% of one core"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
