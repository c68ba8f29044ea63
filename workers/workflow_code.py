"""The workflow modules' compiled code, kept in a worker process across the sandbox's re-imports.

Temporal's workflow sandbox imports a workflow's module afresh for every workflow run, so that no module
state leaks from one run into the next. Python compiles a module's source at each import unless a bytecode
file is in ``__pycache__``, and with ``PYTHONDONTWRITEBYTECODE=1`` (the Dockerfile sets it) none is ever
written: every cycle compiled ``workflows/autobidder.py`` again, about 9 % of the Temporal worker's busy
samples in the portfolio benchmark. :func:`keep_workflow_code` puts a finder in front of ``sys.meta_path`` whose loader
compiles a module's source once per process and hands the same code object to every later import of the same
source. Only the compile is shared: each import still creates a new module and runs its code, so the
sandbox's isolation is unchanged (code objects are immutable). Nothing is written to disk.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType
from typing import Any

# Packages whose modules the sandbox re-imports for every workflow run.
WORKFLOW_PACKAGES = ("workflows",)

# Compiled code by source path and SHA-256 of the source bytes: an edited file compiles again.
_compiled: dict[tuple[str, bytes], CodeType] = {}


class _CompileOnceLoader(importlib.machinery.SourceFileLoader):
    """A source file loader that compiles each distinct source once per process."""

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:  # type: ignore[override]
        """The code of ``data`` (the module's source bytes) read from ``path``, compiled on first use."""
        key = (str(path), hashlib.sha256(bytes(data)).digest())
        code = _compiled.get(key)
        if code is None:
            code = super().source_to_code(data, path, _optimize=_optimize)
            _compiled[key] = code
        return code


class _WorkflowCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``packages`` as the path finder does, with :class:`_CompileOnceLoader` loading them."""

    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = tuple(packages)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        """The path finder's spec of ``fullname`` when it is one of the packages' source modules, else None
        (the next finder decides)."""
        if not any(fullname == package or fullname.startswith(package + ".") for package in self.packages):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = _CompileOnceLoader(spec.loader.name, spec.loader.path)
        return spec


def keep_workflow_code(packages: Sequence[str] = WORKFLOW_PACKAGES) -> None:
    """Compile the source modules of ``packages`` once in this process, however often they are imported
    (see the module docstring); idempotent."""
    if not any(isinstance(finder, _WorkflowCodeFinder) and finder.packages == tuple(packages)
               for finder in sys.meta_path):
        sys.meta_path.insert(0, _WorkflowCodeFinder(packages))


def compiled_modules() -> int:
    """How many distinct module sources this process has compiled through :func:`keep_workflow_code`."""
    return len(_compiled)
