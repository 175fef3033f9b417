# plinth: the two commands that do all the set-up on a fresh Debian 12 / Ubuntu machine.
#
#   make demo   build plinth and run its demo (agent in a temp dir, queried by plinthctl)
#   make test   install what the tests need, then fmt, clippy and the whole test suite
#
# Both install missing system packages with apt-get (as root, or through sudo) and the
# wasm32-wasip2 Rust target with rustup.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build and the tests use: a real TPM (swtpm + tpm2-tools), the
# TSS headers for the TPM collector, a real OCI runtime (runc) and busybox for test
# root filesystems, systemd-nspawn + debootstrap for the packaging tests, a real OCI
# registry (docker-registry), skopeo to push to it and openssl for its test CA.
APT_PACKAGES := build-essential pkg-config libtss2-dev swtpm swtpm-tools tpm2-tools gnutls-bin \
	runc busybox-static sqlite3 debootstrap systemd-container docker-registry skopeo openssl \
	dpkg-dev lintian rpm rpmlint prometheus

.PHONY: demo demo-check test deps js-deps py-deps fmt clippy unit build fuzz-check bench-idle dist dist-check \
	unprivileged-jobs install-test bench-quotes

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# Node.js (>= 18) and npm for the JavaScript plugins, installed from Debian when absent,
# then the pinned packages of plugins/examples/js (componentize-js, jco, typescript) from
# its package-lock.json; the tests build the JS example plugins with them.
js-deps:
	@major=$$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'); \
	if [ -z "$$major" ] || [ "$$major" -lt 18 ] || ! command -v npm >/dev/null; then \
		echo "installing: nodejs npm"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	fi
	@major=$$(node --version | sed -E 's/^v([0-9]+).*/\1/'); \
	[ "$$major" -ge 18 ] || { echo "Node.js $$(node --version) is older than 18"; exit 1; }
	cd plugins/examples/js && npm ci --no-audit --no-fund --prefer-offline

# Python tools of the tests, pinned, in a virtual environment under target/py:
# schemathesis runs against the network API's OpenAPI document and the live server.
SCHEMATHESIS_VERSION := 4.32.5
py-deps:
	@[ -x target/py/bin/st ] && target/py/bin/st --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)" || { \
		echo "installing: schemathesis $(SCHEMATHESIS_VERSION) into target/py"; \
		python3 -m venv target/py && target/py/bin/pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)"; }

build: deps
	$(CARGO) build --workspace --bins

demo: build
	bash tests/demo.sh

# The demo as a check (make test): the binaries the tests built, no rebuild.
demo-check:
	bash tests/demo.sh > target/demo.log 2>&1 || { tail -n 60 target/demo.log; exit 1; }
	@tail -n 1 target/demo.log

# The fuzz targets and the example plugins are workspaces of their own.
fmt:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) fmt --manifest-path plugins/examples/Cargo.toml --all --check

# Type-check the fuzz targets on stable so they cannot rot (running them needs nightly:
# see docs/ARCHITECTURE.md, "fuzz").
fuzz-check:
	CARGO_TARGET_DIR=target/fuzz-check $(CARGO) check --manifest-path fuzz/Cargo.toml --bins

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --no-fail-fast

test: deps js-deps py-deps fmt clippy unit fuzz-check unprivileged-jobs demo-check
	PLINTH_DIST_PROFILE=dev $(MAKE) install-test

# What an idle agent costs (CPU, wake-ups, RSS, fds over 60 s; see docs/ARCHITECTURE.md).
bench-idle: deps
	$(CARGO) build --release -p plinth-agent --bins
	bash benches/idle-agent.sh

# The network API under load: quotes/s, latency percentiles, agent RSS and CPU idle and
# under load (docs/api.md, "Benchmark").
bench-quotes: deps
	$(CARGO) build --release -p plinth-agent --bins
	bash benches/quote-load.sh

# Packaging (docs/packaging.md). `make dist` builds the .deb and the .rpm into target/dist/
# (installing the pinned cargo-deb and cargo-about it needs; the .rpm comes from rpmbuild);
# `make dist-check` also lints both and builds both a second time to compare bytes.
dist: deps
	bash packaging/dist.sh

dist-check: dist
	bash packaging/check.sh

# The whole job suite with the agent unprivileged (uid 65534) against a root plinth-runner.
unprivileged-jobs: deps
	bash tests/unprivileged-jobs.sh

# Install, upgrade, remove, purge and reinstall the .deb in a booted Debian 12 container
# (systemd-nspawn), and the .rpm's scriptlets into an alternate root. `make test` runs it
# on the trial packages of the debug binaries it built (PLINTH_DIST_PROFILE=dev), which
# keeps the 30-minute release build out of CI (docs/packaging.md).
install-test: dist-check
	bash tests/install-test.sh
