#!/usr/bin/env bash
# Regenerates the locks in requirements/ from pyproject.toml (and requirements/build.in):
# exact versions with hashes, valid on every platform and every Python from 3.11 on.
#
#   bash scripts/lock.sh                  keep every locked version that still fits pyproject.toml
#   bash scripts/lock.sh --upgrade        move everything to the newest allowed release
#   bash scripts/lock.sh -P babel         move one package (any uv pip compile option works)
#
# After the lock moves, run the tests and regenerate the goldens if rendered output changed
# (README, Development).
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=0.13.9
tool="${XDG_CACHE_HOME:-$HOME/.cache}/newsletter-lock/uv-$uv_version"
if [ ! -x "$tool/bin/uv" ]; then
    python3 -m venv "$tool"
    "$tool/bin/pip" install -q "uv==$uv_version"
fi
compile() {
    "$tool/bin/uv" pip compile pyproject.toml requirements/build.in \
        --universal --python-version 3.11 --generate-hashes --quiet \
        --custom-compile-command "bash scripts/lock.sh" "$@"
}
compile --extra postgres -o requirements/run.txt "$@"
compile --extra test --extra postgres -o requirements/test.txt "$@"
echo "locked: requirements/run.txt, requirements/test.txt"
