"""One process, one core: keep numerical libraries from starting a thread per core in each worker.

Worker pools scale with processes. BLAS thread pools in every process oversubscribe the cores and
make a millisecond forecast take seconds on a busy machine, so child processes run BLAS single-threaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_blas_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every BLAS thread variable set to 1 unless it is set already."""
    return {**{name: "1" for name in BLAS_THREAD_VARIABLES}, **env}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Processes started inside this block run BLAS on one thread (the variables are restored after)."""
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
