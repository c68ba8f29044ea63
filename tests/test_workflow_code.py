"""The workflow modules compiled once per worker process (workers/workflow_code.py)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.workflow_code import compiled_modules, keep_workflow_code

SOURCE = "RUNS: list[int] = []\n\n\ndef decide(x: int) -> int:\n    RUNS.append(x)\n    return x * {factor}\n"


def _fresh_import(name: str) -> object:
    """Import ``name`` afresh, as the workflow sandbox does for every workflow run."""
    for loaded in [module for module in sys.modules if module == name.split(".")[0] or module.startswith(name)]:
        del sys.modules[loaded]
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package ``compile_once_pkg`` with a module ``rules`` on ``sys.path``; no bytecode files written."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "compile_once_pkg"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "rules.py").write_text(SOURCE.format(factor=2))
    yield folder
    for loaded in [module for module in sys.modules if module.startswith("compile_once_pkg")]:
        del sys.modules[loaded]


def test_a_reimport_runs_the_same_code_in_a_new_module(package: Path) -> None:
    keep_workflow_code(("compile_once_pkg",))
    keep_workflow_code(("compile_once_pkg",))  # idempotent: one finder
    before = compiled_modules()
    first = _fresh_import("compile_once_pkg.rules")
    first.decide(1)  # type: ignore[attr-defined]
    second = _fresh_import("compile_once_pkg.rules")
    assert second is not first
    assert second.decide.__code__ is first.decide.__code__  # type: ignore[attr-defined]
    assert second.RUNS == [] and first.RUNS == [1]  # type: ignore[attr-defined]  # module state is not shared
    assert compiled_modules() == before + 2  # the package and the module, each compiled once


def test_an_edited_source_is_compiled_again(package: Path) -> None:
    keep_workflow_code(("compile_once_pkg",))
    first = _fresh_import("compile_once_pkg.rules")
    (package / "rules.py").write_text(SOURCE.format(factor=3))
    second = _fresh_import("compile_once_pkg.rules")
    assert (first.decide(2), second.decide(2)) == (4, 6)  # type: ignore[attr-defined]


def test_other_modules_are_left_to_the_usual_finders(package: Path) -> None:
    keep_workflow_code(("compile_once_pkg",))
    before = compiled_modules()
    (package.parent / "elsewhere_mod.py").write_text("VALUE = 1\n")
    try:
        assert _fresh_import("elsewhere_mod").VALUE == 1  # type: ignore[attr-defined]
    finally:
        sys.modules.pop("elsewhere_mod", None)
    assert compiled_modules() == before
