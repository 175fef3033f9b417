#!/usr/bin/env bash
# The plinth demo, run by `make demo` after the build: the whole story on one machine, in
# a temporary directory that is removed afterwards, each step printing what it proved.
#
#  1. a real TPM 2.0 (swtpm, manufactured with an EK certificate by a local CA) and the
#     agent on embedded defaults with its network API on loopback (mutual TLS);
#  2. the signed example plugins installed (pricing, scheduling, reporting);
#  3. the AK enrolled, then a checker attests over the network API and plinth-verify
#     appraises the bundle offline (EAR status);
#  4. a marketplace quotes and leases a busybox job over the network API, watches it end;
#  5. the receipt ledger exported and verified offline (receipts: VERIFIED);
#  6. a capacity challenge answered on the CPU and its transcript re-checked offline.
#
# Without root, runc, busybox-static or swtpm the steps that need them are skipped with
# the reason; `make deps` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d -t plinth-demo.XXXXXX)
agent=
tpm=
started=$(date +%s)
cleanup() {
	if [ -n "$agent" ]; then kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; fi
	if [ -n "$tpm" ]; then kill "$tpm" 2>/dev/null || true; wait "$tpm" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
proved() { printf '   -> %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

can_jobs=yes
busybox=$(command -v busybox || true)
if [ "$(id -u)" != 0 ] || ! command -v runc >/dev/null || [ -z "$busybox" ]; then
	can_jobs=
fi

# 1. The TPM.
tcti=
if command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null; then
	step "manufacturing a software TPM 2.0 (swtpm) with an EK certificate from a local CA"
	mkdir -p "$work/tpm" "$work/ca"
	printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
		"$work/ca" "$work/ca" "$work/ca" "$work/ca" >"$work/localca.conf"
	: >"$work/localca.options"
	printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n' \
		"$work/localca.conf" "$work/localca.options" >"$work/swtpm_setup.conf"
	swtpm_setup --tpm2 --create-ek-cert --overwrite --tpmstate "$work/tpm" --config "$work/swtpm_setup.conf" >/dev/null
	tpm_port=$(free_port)
	swtpm socket --tpm2 --server "type=tcp,port=$tpm_port" --ctrl "type=tcp,port=$((tpm_port + 1))" \
		--tpmstate "dir=$work/tpm" --flags not-need-init,startup-clear &
	tpm=$!
	tcti="swtpm:host=127.0.0.1,port=$tpm_port"
	cat "$work/ca/issuercert.pem" "$work/ca/swtpm-localca-rootca-cert.pem" >"$work/ek-ca.pem" 2>/dev/null ||
		cat "$work/ca"/*.pem >"$work/ek-ca.pem"
	proved "a TPM with an endorsement key certified by $(openssl x509 -in "$work/ca/issuercert.pem" -noout -subject 2>/dev/null | sed 's/^subject=//')"
else
	step "no swtpm: attestation is skipped (make deps installs swtpm and swtpm-tools)"
fi

# 2. The agent, its network API and its clients.
api_port=$(free_port)
url="https://127.0.0.1:$api_port"
step "client identities for the network API (plinthctl identity new)"
market_pin=$("$bin/plinthctl" identity new --name market-demo --role market -o "$work/market.pem" 2>/dev/null)
checker_pin=$("$bin/plinthctl" identity new --name checker-demo --role checker -o "$work/checker.pem" 2>/dev/null)
proved "a marketplace and a checker, each an Ed25519 key in a self-signed certificate, pinned below"
"$bin/plinthctl" plugin keygen "$work/author.key" >"$work/author.pub"
cat >"$work/agent.toml" <<TOML
[agent]
state_dir = "$work/state"
runtime_dir = "$work/run"
log_target = "stderr"

[api]
listen = "127.0.0.1:$api_port"

$market_pin

$checker_pin

[plugins]
trusted_keys = ["$(cat "$work/author.pub")"]

[jobs]
receipt_interval_seconds = 2
TOML
ctl() { "$bin/plinthctl" --socket "$work/run/admin.sock" "$@"; }
node_key=
remote() { # identity, args...
	local identity=$1
	shift
	"$bin/plinthctl" --remote "$url" --identity "$work/$identity.pem" --node-key "$node_key" "$@"
}

step "plinth-agent check-config"
"$bin/plinth-agent" check-config --config "$work/agent.toml" | sed -n '1,6p'
step "starting plinth-agent in $work"
PLINTH_ATTESTATION_TPM_TCTI="$tcti" PLINTH_METRICS_LISTEN="" \
	"$bin/plinth-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 300); do
	ctl status >/dev/null 2>&1 && break
	sleep 0.1
done
ctl status
node_key=$(cat "$work/state/node.pub")
proved "the agent is up; its network API's TLS certificate carries the node key $node_key"

step "signing and installing the example plugins (plinthctl plugin sign / install)"
wasm_dir=target/wasm-examples/wasm32-wasip2/release
if [ ! -f "$wasm_dir/plinth_example_pricing.wasm" ]; then
	(cd plugins/examples && CARGO_TARGET_DIR=../../target/wasm-examples cargo build -q --release --target wasm32-wasip2)
fi
for kind in pricing scheduling reporting; do
	printf 'name = "example-%s"\nversion = "1.0.0"\nkind = "%s"\nwit = "plinth:policy@0.1.2"\nwasm_sha256 = ""\n' "$kind" "$kind" >"$work/$kind.toml"
	ctl plugin sign --manifest "$work/$kind.toml" --wasm "$wasm_dir/plinth_example_$kind.wasm" \
		--key "$work/author.key" -o "$work/$kind.plinthpkg" >/dev/null
	ctl plugin install "$work/$kind.plinthpkg"
done
proved "three signed plugins, each verified and self-tested by the host before it serves"

# 3. Attestation.
if [ -n "$tcti" ]; then
	step "enrolling the node's attestation key (TPM2_ActivateCredential round trip)"
	ctl attest enroll -o "$work/enroll-request.json" 2>/dev/null
	"$bin/plinth-verify" enroll challenge --request "$work/enroll-request.json" --ek-ca "$work/ek-ca.pem" \
		-o "$work/enroll-challenge.json" --state "$work/enroll-state.json" | tail -n 1
	ctl attest activate --challenge "$work/enroll-challenge.json" -o "$work/enroll-response.json" 2>/dev/null
	"$bin/plinth-verify" enroll finish --state "$work/enroll-state.json" --response "$work/enroll-response.json" \
		-o "$work/ak-record.json" | tail -n 1
	proved "the AK lives in the TPM whose EK the CA certified"
	step "a checker attests the host over the network API; plinth-verify appraises the bundle offline"
	nonce=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
	remote checker attest --nonce "$nonce" -o "$work/bundle.json"
	openssl genpkey -algorithm ed25519 -out "$work/ear.key" 2>/dev/null
	"$bin/plinth-verify" bundle "$work/bundle.json" --nonce "$nonce" --ak-record "$work/ak-record.json" \
		--ear "$work/ear.jws" --ear-key "$work/ear.key" --json >"$work/appraisal.json" || true
	# The EAR (a JWS signed by the verifier's key): each submodule's ear.status.
	status=$(python3 -c '
import base64, json, sys
payload = open(sys.argv[1]).read().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(", ".join(name + ": " + sub["ear.status"] for name, sub in sorted(claims["submods"].items())))
' "$work/ear.jws")
	echo "   EAR status: $status"
	proved "TPM quote, AK and node key bound to the checker's fresh nonce, appraised offline"
fi

if [ -z "$can_jobs" ]; then
	step "skipping the job steps: they need root, runc and busybox-static (make deps installs them)"
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
  "command": ["/bin/sh", "-c", "echo hello from a plinth sandbox; id; uname -n; sleep 2; echo done"],
  "resources": {"cpu": 0.5, "memory_bytes": 67108864, "pids": 64, "max_duration_s": 60}
}
JSON
	step "a marketplace asks for a quote over the network API (the pricing policy prices it)"
	remote market quote --client market-demo --gpus 0 --duration 60 -o "$work/quote.json"
	proved "a plinth-quote/1 signed by the node key, naming the policy and its SHA-256"
	if grep -q '"plugin_error"' "$work/quote.json"; then
		echo "   (the example pricing plugin prices GPU time only and this job asks for none: the"
		echo "    plugin's error and the built-in policy that answered are in the signed quote)"
	fi
	step "the marketplace leases the quote: the scheduling plugin admits the job, it starts"
	job=$(remote market lease --quote "$work/quote.json" --spec "$work/job.json" --watch)
	proved "quote checked (signature, expiry, unused), job $job admitted and run to its end"
	step "its output, streamed over the network API"
	remote market jobs logs "$job"
	sleep 3
	step "the receipt ledger, exported and verified offline by the auditor's tool"
	ctl receipts export --out "$work/ledger.jsonl"
	"$bin/plinth-verify" receipts "$work/ledger.jsonl" --node-key "$node_key"
	grep -q "\"quote_id\"" "$work/ledger.jsonl" && proved "receipts: VERIFIED — hash-chained, signed, priced by the quote's terms"
	step "the reporting plugin's report of the period"
	remote market reports | sed -n '1,40p'
fi

step "a checker's capacity challenge, answered on the CPU, re-checked offline"
remote checker challenge run --n 256 -o "$work/transcript.json"
"$bin/plinth-verify" challenge "$work/transcript.json"
proved "the host computed C = A·B for a fresh seed and opened the rows asked for"
step "stopping (SIGTERM)"
kill -TERM "$agent"
wait "$agent" && echo "agent exited cleanly"
agent=
echo
echo "demo done in $(($(date +%s) - started)) s"
