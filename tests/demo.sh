#!/usr/bin/env bash
# The plinth demo: start the agent on embedded defaults in a temporary directory,
# query it with plinthctl, and stop it. Run by `make demo` after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d -t plinth-demo.XXXXXX)
trap 'kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/agent.toml" <<TOML
[agent]
state_dir = "$work/state"
runtime_dir = "$work/run"
log_target = "stderr"
TOML

echo "== plinth-agent check-config"
"$bin/plinth-agent" check-config --config "$work/agent.toml"
echo
echo "== starting plinth-agent in $work"
"$bin/plinth-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do
	[ -S "$work/run/admin.sock" ] && break
	sleep 0.1
done
echo "== plinthctl status"
"$bin/plinthctl" --socket "$work/run/admin.sock" status
echo
echo "== plinthctl status --json"
"$bin/plinthctl" --socket "$work/run/admin.sock" status --json
echo
echo "== stopping (SIGTERM)"
kill -TERM "$agent"
wait "$agent" && echo "agent exited cleanly"
echo "== agent log"
cat "$work/agent.log"
