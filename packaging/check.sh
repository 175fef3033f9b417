#!/bin/bash
# make dist-check: lints both packages (lintian, rpmlint: no errors; overrides only with
# a written reason, in packaging/lintian-overrides and packaging/rpmlintrc) and checks
# that both packages are reproducible: the staging and packaging steps are run again from the
# same binaries and must give the same bytes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/target/dist
DEB=$(ls "$OUT"/plinth_*.deb)
RPM=$(ls "$OUT"/plinth-*.rpm)
status=0

if command -v lintian >/dev/null; then
    echo "== lintian $DEB"
    lintian --fail-on error --suppress-tags-from-file /dev/null "$DEB" || status=1
else
    echo "SKIP lintian: not installed"
fi
if command -v rpmlint >/dev/null; then
    echo "== rpmlint $RPM"
    rpmlint -c packaging/rpmlint.toml -r packaging/rpmlintrc "$RPM" || status=1
else
    echo "SKIP rpmlint: not installed"
fi

# Both packages built a second time from the same binaries must have the same bytes.
declare -A first
FIRST=$ROOT/target/dist-first
rm -rf "$FIRST" && mkdir -p "$FIRST"
for pkg in "$DEB" "$RPM"; do
    first[$pkg]=$(sha256sum "$pkg" | cut -d' ' -f1)
    cp "$pkg" "$FIRST/"
done
sleep 1
bash packaging/dist.sh --packages-only >/dev/null
for pkg in "$DEB" "$RPM"; do
    second=$(sha256sum "$pkg" | cut -d' ' -f1)
    if [ "${first[$pkg]}" = "$second" ]; then
        echo "== reproducible: $(basename "$pkg") built twice, sha256 $second both times"
        rm "$FIRST/$(basename "$pkg")"
    else
        echo "NOT reproducible: $(basename "$pkg"): ${first[$pkg]} then $second (first build kept in $FIRST)"
        command -v diffoscope >/dev/null && diffoscope "$FIRST/$(basename "$pkg")" "$pkg" | head -40
        status=1
    fi
done
exit $status
