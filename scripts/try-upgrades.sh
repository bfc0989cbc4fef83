#!/usr/bin/env bash
# Tries newer dependencies on purpose, in a scratch copy: never part of CI, changes nothing here.
#
#   bash scripts/try-upgrades.sh              everything at the newest release pyproject.toml allows
#   bash scripts/try-upgrades.sh babel lxml   the lock, with only these packages at their newest
#
# Prints the versions that differ from requirements/test.txt, runs the whole test suite, then
# regenerates the goldens in the copy and lists the ones that moved. Exits with pytest's status.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$root"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$scratch"
cd "$scratch"
python3 -m venv .venv
if [ $# -eq 0 ]; then
    .venv/bin/pip install -q --upgrade -e '.[test]' || exit 2
else
    .venv/bin/pip install -q --require-hashes -r requirements/test.txt || exit 2
    .venv/bin/pip install -q --upgrade "$@" || exit 2
    .venv/bin/pip install -q --no-deps --no-build-isolation -e . || exit 2
fi

echo "== versions that differ from requirements/test.txt"
.venv/bin/python - <<'PY'
import re
from importlib.metadata import distributions
from packaging.utils import canonicalize_name

text = open("requirements/test.txt", encoding="utf-8").read()
locked = {
    canonicalize_name(name): version
    for name, version in re.findall(r"(?m)^([A-Za-z0-9._-]+)==([^\s;\\]+)", text)
}
for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
    name = canonicalize_name(dist.metadata["Name"])
    if name in locked and locked[name] != dist.version:
        print(f"  {name}: {locked[name]} -> {dist.version}")
PY

echo "== tests"
.venv/bin/python -m pytest -q -p no:cacheprovider
status=$?

echo "== goldens that move"
NEWSLETTER_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_render.py tests/test_feed.py -k golden >/dev/null 2>&1
git diff --no-index --stat "$root/tests/golden" tests/golden || true
# The messages (.eml) are base64: their HTML and text parts show the same change readably.
for f in tests/golden/*.html tests/golden/*.txt tests/golden/*.atom tests/golden/*.json; do
    cmp -s "$root/$f" "$f" || { echo "-- $f"; diff "$root/$f" "$f" | grep '^[<>]' | head -4; }
done
exit $status
