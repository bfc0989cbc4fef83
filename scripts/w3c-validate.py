"""Run the W3C Feed Validation Service's own code on feeds, by hand (not part of CI).

    python scripts/w3c-validate.py CHECKOUT URL_OR_FILE [URL_OR_FILE ...]

CHECKOUT is a clone of w3c/feedvalidator (the validator is its src/); the Python running
this needs html5lib. A URL is fetched as the online service fetches it (media type, gzip,
redirects); a file is read as if served from the address its rel="self" link names. Prints
each error and warning the online service would show, or "valid, no warnings", per feed,
and exits 1 when any feed has one. tests/feedcheck.py restates these rules for CI.
"""

from __future__ import annotations

import sys
import urllib.request  # noqa: F401 - the validator uses urllib.request without importing it
from pathlib import Path
from xml.etree import ElementTree


def _self_url(path: Path) -> str:
    root = ElementTree.parse(path).getroot()
    for link in root.findall("{http://www.w3.org/2005/Atom}link"):
        if link.get("rel") == "self":
            return link.get("href") or ""
    return ""


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(sys.argv[1]) / "src"))
    import feedvalidator
    from feedvalidator.compatibility import AA
    from feedvalidator.formatter.text_plain import Formatter

    failed = False
    for target in sys.argv[2:]:
        try:
            if target.startswith(("http://", "https://")):
                events = feedvalidator.validateURL(target, firstOccurrenceOnly=0)["loggedEvents"]
            else:
                with open(target, "rb") as fh:
                    events = feedvalidator.validateStream(
                        fh,
                        firstOccurrenceOnly=0,
                        contentType="application/atom+xml; charset=utf-8",
                        base=_self_url(Path(target)),
                    )["loggedEvents"]
        except feedvalidator.logging.ValidationFailure as failure:
            events = [failure.event]
        lines = Formatter(AA(events))
        failed = failed or bool(lines)
        print(f"{target}: " + ("\n  ".join(["", *lines]) if lines else "valid, no warnings"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
