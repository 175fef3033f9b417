#!/bin/bash
# make dist: builds the .deb and the .rpm of plinth in one command, reproducibly.
#
#   packaging/dist.sh [--packages-only]
#
# 1. installs the pinned packaging tools into target/dist-tools (cargo install --locked);
# 2. builds every workspace binary with the `dist` profile (thin LTO off, for CI time),
#    paths remapped so they do not leak into the binaries;
# 3. stages the install tree in target/dist-stage: binaries (every workspace binary but
#    DIST_EXCLUDE, so new ones are picked up), units, sysusers/tmpfiles, configuration,
#    man pages and completions (plinth-dist-docs, from the clap definitions), the example
#    plugins signed with the packaging key, docs, the dependency licences (cargo-about);
# 4. cargo deb and rpmbuild (packaging/rpm/plinth.spec) into target/dist/.
# Every timestamp is SOURCE_DATE_EPOCH (the last commit's time unless set).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS=$ROOT/target/dist-tools
STAGE=$ROOT/target/dist-stage
OUT=$ROOT/target/dist
CARGO_DEB_VERSION=3.8.0
CARGO_ABOUT_VERSION=0.9.3
# Workspace binaries that are not shipped: the docs generator and the jobs crate's
# stand-alone test supervisor (the runner supervises with `plinth-runner supervise`).
DIST_EXCLUDE=" plinth-dist-docs plinth-job-shim "

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export TZ=UTC LC_ALL=C.UTF-8
umask 022

install_tool() { # crate version binary [cargo install options]
    if [ ! -x "$TOOLS/bin/$3" ] || ! "$TOOLS/bin/$3" --version 2>/dev/null | grep -q "$2"; then
        echo "installing $1 $2 into $TOOLS"
        "$CARGO" install --locked --quiet --root "$TOOLS" "${@:4}" "$1@$2"
    fi
}
# Reuse tools a previous build installed elsewhere (PLINTH_DIST_TOOLS), else install.
if [ -n "${PLINTH_DIST_TOOLS:-}" ] && [ ! -e "$TOOLS" ]; then
    mkdir -p "$(dirname "$TOOLS")" && ln -s "$PLINTH_DIST_TOOLS" "$TOOLS"
fi
install_tool cargo-deb "$CARGO_DEB_VERSION" cargo-deb
install_tool cargo-about "$CARGO_ABOUT_VERSION" cargo-about --features cli
export PATH="$TOOLS/bin:$PATH"

# PLINTH_DIST_PROFILE=dev packages debug binaries (a quick trial of the packaging itself).
PROFILE=${PLINTH_DIST_PROFILE:-dist}
BIN=$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
if [ "${1:-}" != "--packages-only" ]; then
    if [ "$PROFILE" = dev ]; then
        # The trial reuses the test build as it is (same RUSTFLAGS, so nothing is rebuilt
        # but what changed): CI packages and installs these binaries.
        "$CARGO" build --locked --workspace --bins
    else
        RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$ROOT=/build/plinth --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
            "$CARGO" build --locked --profile "$PROFILE" --workspace --bins
    fi
fi

rm -rf "$STAGE"
install -d "$STAGE"/usr/bin "$STAGE"/usr/lib/plinth/plugins "$STAGE"/etc/plinth \
    "$STAGE"/usr/lib/systemd/system "$STAGE"/usr/lib/sysusers.d "$STAGE"/usr/lib/tmpfiles.d \
    "$STAGE"/usr/share/man/man1 "$STAGE"/usr/share/man/man8 \
    "$STAGE"/usr/share/bash-completion/completions "$STAGE"/usr/share/zsh/vendor-completions \
    "$STAGE"/usr/share/fish/vendor_completions.d "$STAGE"/usr/share/doc/plinth \
    "$STAGE"/usr/share/lintian/overrides "$STAGE"/usr/share/plinth/grafana

# Binaries: every [[bin]] of the workspace's packages, minus DIST_EXCLUDE.
for bin in $("$CARGO" metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print("\n".join(sorted({t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]})))'); do
    case "$DIST_EXCLUDE" in *" $bin "*) continue ;; esac
    install -m 755 "$BIN/$bin" "$STAGE/usr/bin/$bin"
    # The dist profile strips at link time; debug binaries are stripped here.
    if [ "$PROFILE" = dev ]; then strip --strip-all "$STAGE/usr/bin/$bin"; fi
done

install -m 644 systemd/*.service "$STAGE/usr/lib/systemd/system/"
install -m 644 systemd/sysusers.d/plinth.conf "$STAGE/usr/lib/sysusers.d/plinth.conf"
install -m 644 systemd/tmpfiles.d/plinth.conf "$STAGE/usr/lib/tmpfiles.d/plinth.conf"
install -m 644 packaging/agent.toml "$STAGE/usr/lib/plinth/agent.toml"
install -m 644 packaging/etc-agent.toml "$STAGE/etc/plinth/agent.toml"
install -m 644 packaging/runner.toml "$STAGE/etc/plinth/runner.toml"
install -m 644 packaging/lintian-overrides "$STAGE/usr/share/lintian/overrides/plinth"
# The Grafana dashboard over the agent's metrics (docs/metrics.md).
install -m 644 packaging/grafana/plinth-fleet.json "$STAGE/usr/share/plinth/grafana/plinth-fleet.json"

# Man pages (gzip -n: no name or time in the header) and completions.
DOCS=$(mktemp -d)
trap 'rm -rf "$DOCS"' EXIT
"$BIN/plinth-dist-docs" "$DOCS" >/dev/null
for page in "$DOCS"/man/*.1 "$DOCS"/man/*.8; do
    section=${page##*.}
    gzip -9nc "$page" > "$STAGE/usr/share/man/man$section/$(basename "$page").gz"
done
install -m 644 "$DOCS"/completions/bash/* "$STAGE/usr/share/bash-completion/completions/"
install -m 644 "$DOCS"/completions/zsh/* "$STAGE/usr/share/zsh/vendor-completions/"
install -m 644 "$DOCS"/completions/fish/* "$STAGE/usr/share/fish/vendor_completions.d/"

# The example plugins, built for wasm32-wasip2 and signed with the packaging key (made
# once, kept in target/dist-key: Ed25519 signatures are deterministic, so the packages
# stay reproducible). A release build signs with PLINTH_DIST_PLUGIN_KEY instead.
WASM_TARGET=$ROOT/target/wasm-examples
(cd plugins/examples && CARGO_TARGET_DIR="$WASM_TARGET" "$CARGO" build --locked --quiet --release --target wasm32-wasip2)
KEY=${PLINTH_DIST_PLUGIN_KEY:-$ROOT/target/dist-key/plugins.key}
if [ ! -f "$KEY" ]; then
    install -d -m 700 "$(dirname "$KEY")"
    "$BIN/plinthctl" plugin keygen "$KEY" > "$(dirname "$KEY")/plugins.pub.txt"
fi
for kind in pricing scheduling reporting; do
    "$BIN/plinthctl" plugin sign --manifest "packaging/plugins/$kind.toml" \
        --wasm "$WASM_TARGET/wasm32-wasip2/release/plinth_example_$kind.wasm" \
        --key "$KEY" -o "$STAGE/usr/lib/plinth/plugins/example-$kind.plinthpkg" >/dev/null
done

# Docs, changelog, licences.
install -m 644 README.md "$STAGE/usr/share/doc/plinth/README.md"
for doc in docs/*.md; do install -m 644 "$doc" "$STAGE/usr/share/doc/plinth/"; done
# The dependency licences (cargo-about's JSON, rendered by packaging/licences.py into the
# .deb's copyright and the .rpm's LICENSES). The listing depends only on the locked
# dependency set and the manifests; it is cached under that key (cargo-about takes
# about 90 s on two cores).
LICENCE_KEY=$(cat Cargo.lock packaging/about.toml \
    $(git ls-files '*Cargo.toml' 2>/dev/null || find . -name Cargo.toml -not -path './target/*') |
    sha256sum | cut -c1-16)
LICENCES=$ROOT/target/dist-licences/$LICENCE_KEY.json
if [ ! -s "$LICENCES" ]; then
    mkdir -p "$(dirname "$LICENCES")"
    # Every locked crate's sources, for every target: cargo-about reads their licence
    # files, and a build downloads only the host's (android_system_properties, say, is
    # never built here). Then cargo-about reads them without the network (--frozen).
    "$CARGO" fetch --locked
    cargo-about generate --locked --frozen -c packaging/about.toml --workspace --format json \
        > "$LICENCES.tmp" 2>"$DOCS/about.log" || { cat "$DOCS/about.log" >&2; exit 1; }
    mv "$LICENCES.tmp" "$LICENCES"
fi
python3 packaging/licences.py "$LICENCES" "$STAGE/copyright" "$STAGE/LICENSES"

find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
rm -f "$OUT"/*.deb "$OUT"/*.rpm
# (cargo-deb warns that staged paths are not under target/release: that is intended.)
cargo-deb -p plinth --no-build --no-strip --locked -o "$OUT/" > "$DOCS/cargo-deb.log" 2>&1 || { cat "$DOCS/cargo-deb.log" >&2; exit 1; }
# The .rpm: rpmbuild from the same staged tree (packaging/rpm/plinth.spec says how).
VERSION=$("$CARGO" metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "plinth"))')
RPMTOP=$ROOT/target/rpmbuild
rm -rf "$RPMTOP"
rpmbuild -bb --quiet --define "_topdir $RPMTOP" --define "_rpmdir $OUT" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "plinth_version $VERSION" --define "plinth_stage $STAGE" \
    packaging/rpm/plinth.spec > "$DOCS/rpmbuild.log" 2>&1 || { cat "$DOCS/rpmbuild.log" >&2; exit 1; }
rm -rf "$RPMTOP"
ls -l "$OUT"/*.deb "$OUT"/*.rpm
