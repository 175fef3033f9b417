#!/bin/bash
# make dist-check: lints both packages (lintian, rpmlint: no errors; overrides only with
# a written reason, in packaging/lintian-overrides and packaging/rpmlintrc) and checks
# that the .deb is reproducible: the staging and packaging steps are run again from the
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
    rpmlint -f packaging/rpmlintrc "$RPM" || status=1
else
    echo "SKIP rpmlint: not installed"
fi

first=$(sha256sum "$DEB" | cut -d' ' -f1)
cp "$DEB" "$OUT/first.deb.tmp"
sleep 1
bash packaging/dist.sh --packages-only >/dev/null
second=$(sha256sum "$DEB" | cut -d' ' -f1)
if [ "$first" = "$second" ]; then
    echo "== reproducible: $(basename "$DEB") built twice, sha256 $first both times"
    rm "$OUT/first.deb.tmp"
else
    echo "NOT reproducible: $first then $second (first build kept as $OUT/first.deb.tmp)"
    command -v diffoscope >/dev/null && diffoscope "$OUT/first.deb.tmp" "$DEB" | head -40
    status=1
fi
exit $status
