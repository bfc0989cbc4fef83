"""The benchmarks stay runnable: each module under bench/ imports against the code as it
is (CI runs no benchmark, so a renamed name would otherwise go unnoticed until someone
measures)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_each_benchmark_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Benchmarks import each other by module name (send_postgres uses send), as when run.
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # what each measures runs only as __main__
