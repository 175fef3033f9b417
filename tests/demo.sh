#!/usr/bin/env bash
# The plinth demo, run by `make demo` after the build: the agent on embedded defaults in
# a temporary directory; plinthctl status; then (as root, with runc and busybox-static)
# a tenant job from a busybox OCI image built here, its logs, the signed receipt ledger,
# and the auditor's offline check of that ledger with plinth-verify.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d -t plinth-demo.XXXXXX)
agent=
cleanup() {
	if [ -n "$agent" ]; then kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/agent.toml" <<TOML
[agent]
state_dir = "$work/state"
runtime_dir = "$work/run"
log_target = "stderr"
TOML
ctl() { "$bin/plinthctl" --socket "$work/run/admin.sock" "$@"; }

echo "== plinth-agent check-config"
"$bin/plinth-agent" check-config --config "$work/agent.toml"
echo
echo "== starting plinth-agent in $work"
"$bin/plinth-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 200); do
	ctl status >/dev/null 2>&1 && break
	sleep 0.1
done
echo "== plinthctl status"
ctl status
echo

busybox=$(command -v busybox || true)
if [ "$(id -u)" != 0 ] || ! command -v runc >/dev/null || [ -z "$busybox" ]; then
	echo "== skipping the job demo: it needs root, runc and busybox-static (make deps installs them)"
else
	echo "== building a busybox OCI image layout"
	layout="$work/state/import/busybox"
	rootfs="$work/rootfs"
	mkdir -p "$layout/blobs/sha256" "$rootfs/bin"
	cp "$busybox" "$rootfs/bin/busybox"
	for applet in sh echo cat uname id sleep; do ln -s busybox "$rootfs/bin/$applet"; done
	tar -C "$rootfs" --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" .
	blob() { # file -> prints "digest size", stores the blob
		local digest size
		digest=$(sha256sum "$1" | cut -d' ' -f1)
		size=$(stat -c %s "$1")
		cp "$1" "$layout/blobs/sha256/$digest"
		echo "$digest $size"
	}
	read -r layer_digest layer_size < <(blob "$work/layer.tar")
	printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$layer_digest" >"$work/config.json"
	read -r config_digest config_size < <(blob "$work/config.json")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
	read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
		"$manifest_digest" "$manifest_size" >"$layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

	cat >"$work/job.json" <<JSON
{
  "format": "plinth-job/1",
  "image": {"source": "oci-layout", "path": "$layout", "reference": "latest"},
  "command": ["/bin/sh", "-c", "echo hello from a plinth sandbox; id; uname -n; echo done > /scratch/out.txt"],
  "resources": {"cpu": 0.5, "memory_bytes": 67108864, "pids": 64, "max_duration_s": 60}
}
JSON
	echo
	echo "== plinthctl jobs submit --wait"
	ctl jobs submit --tenant demo-tenant --lease demo-lease --wait "$work/job.json" | tee "$work/submit.out"
	job=$(ctl jobs list --json | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -n 1)
	echo
	echo "== plinthctl jobs show $job"
	ctl jobs show "$job"
	echo
	echo "== plinthctl jobs logs $job"
	ctl jobs logs "$job"
	echo
	echo "== plinthctl receipts export | plinth-verify receipts (the auditor's offline check)"
	ctl receipts export --out "$work/ledger.jsonl"
	"$bin/plinth-verify" receipts "$work/ledger.jsonl" --node-key "$(cat "$work/state/node.pub")"
fi

echo
echo "== stopping (SIGTERM)"
kill -TERM "$agent"
wait "$agent" && echo "agent exited cleanly"
agent=
