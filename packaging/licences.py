#!/usr/bin/env python3
"""Renders the dependency licences that cargo-about found (its JSON output) into the
packages' copyright files (packaging/dist.sh):

  licences.py ABOUT_JSON DEBIAN_COPYRIGHT FULL_LICENSES

DEBIAN_COPYRIGHT is /usr/share/doc/plinth/copyright of the .deb: texts Debian ships in
/usr/share/common-licenses (Apache-2.0, MPL-2.0, CC0-1.0) are referred to there rather
than repeated (Debian policy 12.5; lintian's copyright-file-contains-full-*-license).
FULL_LICENSES is the .rpm's /usr/share/licenses/plinth/LICENSES, every text in full.
Licences and crates are sorted, so the output is reproducible."""

import json
import re
import sys

HEADER = """plinth: Copyright 2026 plinth developers; licensed under the Apache License 2.0{where}.

Third-party software in plinth's binaries, by licence (found by cargo-about).
"""
COMMON = {"Apache-2.0", "MPL-2.0", "CC0-1.0"}
# The Apache License 2.0 from its title to the end of its terms, and the appendix's
# boilerplate notice when it follows: what Debian ships.
APACHE_TERMS = re.compile(
    r"[ \t]*Apache License\s+Version 2\.0, January 2004.*?END OF TERMS AND CONDITIONS"
    r"(\s*APPENDIX: How to apply the Apache License.*?limitations under the License\.)?",
    re.S,
)


def common_text(licence):
    """The text with what /usr/share/common-licenses holds replaced by a reference, or
    None when the text is not one of those licences."""
    lid, text = licence["id"], licence["text"]
    if lid.startswith("Apache-2.0") and APACHE_TERMS.search(text):
        # Keep what is around the terms: a copyright line, the LLVM exception.
        return APACHE_TERMS.sub(
            "The Apache License 2.0: on Debian systems, /usr/share/common-licenses/Apache-2.0.",
            text,
        )
    if lid in COMMON:
        return f"The {licence['name']}: on Debian systems, /usr/share/common-licenses/{lid}.\n"
    return None


def render(about, debian):
    where = " (on Debian systems: /usr/share/common-licenses/Apache-2.0)" if debian else ""
    out = [HEADER.format(where=where)]
    # Licences with the same text once the common texts are referred to are merged.
    blocks = {}
    for licence in about["licenses"]:
        text = licence["text"]
        if debian:
            text = common_text(licence) or text
        key = (licence["name"], licence["id"], text.strip("\n"))
        users = blocks.setdefault(key, set())
        users.update(f"{u['crate']['name']} {u['crate']['version']}" for u in licence["used_by"])
    for (name, lid, text), users in sorted(blocks.items(), key=lambda b: (b[0][1], sorted(b[1]))):
        out.append("=" * 79)
        out.append(f"{name} ({lid}), used by:")
        out.extend(f"  {user}" for user in sorted(users))
        out.append("")
        out.append(text)
        out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        about = json.load(f)
    for path, debian in ((sys.argv[2], True), (sys.argv[3], False)):
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(about, debian))


if __name__ == "__main__":
    main()
