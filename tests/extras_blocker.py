"""Python as a deployment sees it: a fresh interpreter in which nothing that only the optional extras install
(pyproject.toml ``local`` and ``bench``, with everything they pull in that the runtime does not) can be
imported.

The extras' distributions are found from the installed metadata: the closure of ``openvpp[local,bench]``'s
requirements less the closure of its runtime requirements, mapped to their top-level modules. A
``sys.meta_path`` finder placed first refuses those modules with ``ModuleNotFoundError``, as an
interpreter without them would.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "openvpp"
EXTRAS = frozenset({"local", "bench"})


def requirement_closure(roots: Iterable[tuple[str, frozenset[str]]]) -> set[str]:
    """Canonical names of the installed distributions ``roots`` (name, extras) need, transitively."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(roots)
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed on this platform (markers differ)
            continue
        for text in requirements:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


def extras_only_distributions() -> set[str]:
    """Distributions installed for the extras and not for the runtime (canonical names)."""
    runtime = requirement_closure([(DISTRIBUTION, frozenset())])
    with_extras = requirement_closure([(DISTRIBUTION, EXTRAS)])
    return with_extras - runtime


def extras_only_modules() -> set[str]:
    """Top-level modules of :func:`extras_only_distributions` (e.g. ``moto``, ``pgserver``, ``matplotlib``)."""
    distributions = extras_only_distributions()
    return {module for module, owners in metadata.packages_distributions().items()
            if any(canonicalize_name(owner) in distributions for owner in owners)}


BLOCKER = '''
import sys
from importlib.abc import MetaPathFinder

BLOCKED = frozenset({blocked!r})
_preloaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
if _preloaded:
    raise SystemExit(f"imported before the blocker: {{_preloaded}}")


class _WithoutExtras(MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None


sys.meta_path.insert(0, _WithoutExtras())
'''


def run_without_extras(code: str, *, environ: Mapping[str, str] | None = None,
                       timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (in the repository) where the extras cannot be imported."""
    program = BLOCKER.format(blocked=sorted(extras_only_modules())) + textwrap.dedent(code)
    environment = dict(os.environ if environ is None else environ)
    return subprocess.run([sys.executable, "-c", program], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=timeout_s)
