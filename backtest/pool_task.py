"""A backtest run as a worker-pool task: ``BacktestRunRequest -> BacktestRunResult``.

The sweep (:mod:`workflows.backtest_sweep`) queues one :class:`~vpp.v1.worker_pb2.BacktestRunRequest` per run
on the backtest queue; a pool process (``vpp worker pool backtest``) serves it with :func:`run_backtest_task`,
which makes the run exactly as ``vpp backtest run`` does (:func:`backtest.runs.execute_run` and
:func:`backtest.runs.save_run`, one home) and archives the run folder's files.

* **Data by reference.** The request names the ``--data`` paths and every file they resolve to with its
  sha256; the worker hashes the files it finds and refuses (an invalid request: dead-lettered at once with
  the reason, so the sweep reports it) data whose hash does not match, a missing file, or a different set
  of files.
* **The same run, or none.** The worker re-makes the run's spec with its own settings and code and refuses
  one whose run id differs from the id the sweep expects (other code version, settings or data): a result
  is always the result of the run its id names.
* **Idempotent by run id.** The result and the run folder's files are archived under the index
  ``backtest-run/<run id>``; a run already finished there (by any process, on any machine sharing the
  archive) is answered from the archive, never recomputed.

The handler is composed with the archive and settings of the process that serves it
(:func:`backtest_registry`): the registry in ``algorithms`` cannot import the backtest engine.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from aemo.errors import MmsFormatError
from algorithms.common.content_hash import with_inputs_hash
from algorithms.common.errors import InvalidRequestError
from algorithms.registry import HandlerRegistry
from archive.store import Archive
from backtest.engine import BacktestError
from backtest.runs import (
    LEDGER_FILE,
    SUMMARY_FILE,
    TIMING_FILE,
    MarketInputs,
    RunError,
    RunSpec,
    canonical_json,
    execute_run,
    file_sha256,
    load_inputs,
    make_spec,
    require_price_limits,
    resolve_period,
    save_run,
    with_data_price_limits,
)
from backtest.strategy import StrategyError, strategy_from_dict
from settings import ConfigError, Settings
from vpp.v1 import common_pb2, worker_pb2

logger = logging.getLogger(__name__)

# The algorithm a backtest-run request names: one name and version, defined here.
NAME = "backtest-run"
VERSION = "1"
KIND = "backtest"
# Archive index of one run (by run id) and the labels of what it holds.
RUN_INDEX_PREFIX = "backtest-run/"
RESULT_LABEL = "backtest-run-result"
FILES_LABEL = "backtest-run-files"
# The run folder's files a worker archives (the plots and report are drawn by whoever wants them).
RUN_FOLDER_FILES = (SUMMARY_FILE, LEDGER_FILE, TIMING_FILE)


class BacktestRunRefusedError(InvalidRequestError):
    """A backtest run that cannot be made as requested (data, strategy, period, settings); never retried."""


def run_index(run_id: str) -> str:
    """The archive index (cycle id) of run ``run_id``: ``backtest-run/<run id>``."""
    if not run_id:
        raise ValueError("run id must not be empty")
    return RUN_INDEX_PREFIX + run_id


def run_request(spec: RunSpec, *, request_id: str, engine_workers: int = 1) -> worker_pb2.BacktestRunRequest:
    """The pool request of run ``spec`` (its id, region, period, strategy, data paths and their sha256),
    with its inputs hash. ``engine_workers``: processes the engine prepares forecasts with in the worker."""
    if engine_workers < 1:
        raise ValueError(f"engine_workers must be at least 1, got {engine_workers}")
    request = worker_pb2.BacktestRunRequest(
        request_id=request_id, algorithm=common_pb2.AlgorithmRef(name=NAME, version=VERSION), run_id=spec.run_id,
        region=spec.region, period_start=spec.period.start.isoformat(), period_end=spec.period.end.isoformat(),
        strategy_json=canonical_json(spec.strategy.to_dict()), data_sources=[str(s) for s in spec.sources],
        data_files=[worker_pb2.BacktestDataFile(path=str(f.path), table=f.table, sha256=f.sha256) for f in spec.files],
        engine_workers=engine_workers)
    return with_inputs_hash(request)


def check_data_files(request: worker_pb2.BacktestRunRequest) -> None:
    """Refuse (:class:`BacktestRunRefusedError`) a request naming no data, or a file that is missing here or
    whose bytes do not hash to the sha256 the request gives."""
    if not request.data_sources or not request.data_files:
        raise BacktestRunRefusedError(f"run {request.run_id}: the request names no data")
    for data_file in request.data_files:
        path = Path(data_file.path)
        if not path.is_file():
            raise BacktestRunRefusedError(f"run {request.run_id}: data file {path} does not exist on this worker")
        actual = file_sha256(path)
        if actual != data_file.sha256:
            raise BacktestRunRefusedError(
                f"run {request.run_id}: data file {path} has sha256 {actual[:12]}…, the sweep expects "
                f"{data_file.sha256[:12]}… (the data changed or differs on this worker)")


@dataclass
class _InputsCache:
    """The market inputs of the last data loaded, keyed by the files and their sha256 (one entry)."""

    key: tuple[tuple[str, str, str], ...] = ()
    inputs: MarketInputs | None = None

    def load(self, sources: Sequence[str], files: Sequence[worker_pb2.BacktestDataFile]) -> MarketInputs:
        key = tuple(sorted((f.path, f.table, f.sha256) for f in files)) + tuple(("source", s, "") for s in sources)
        if self.inputs is None or key != self.key:
            self.inputs, self.key = load_inputs([Path(s) for s in sources]), key
        return self.inputs


def run_spec_of(request: worker_pb2.BacktestRunRequest, settings: Settings,
                inputs: MarketInputs) -> tuple[Settings, RunSpec]:
    """The settings (price limits of the data applied) and spec of the run ``request`` names, made here with
    this process's settings and code; :class:`BacktestRunRefusedError` when it cannot be made or its run id
    is not the one requested."""
    requested = sorted((f.table, f.sha256) for f in request.data_files)
    found = sorted((f.table, f.sha256) for f in inputs.files)
    if found != requested:
        raise BacktestRunRefusedError(f"run {request.run_id}: the data paths resolve to other files here "
                                      f"({len(found)} files) than the sweep's ({len(requested)} files)")
    try:
        strategy = strategy_from_dict(json.loads(request.strategy_json), settings)
        effective = with_data_price_limits(settings, inputs)
        period = resolve_period(inputs.dispatch, request.region, start=datetime.fromisoformat(request.period_start),
                                end=datetime.fromisoformat(request.period_end))
        require_price_limits(effective, period)
    except (ValueError, KeyError, TypeError) as error:  # StrategyError, RunError, ConfigError are ValueErrors
        raise BacktestRunRefusedError(f"run {request.run_id}: {error}") from None
    spec = make_spec(effective, inputs, request.region, period, strategy)
    if spec.run_id != request.run_id:
        raise BacktestRunRefusedError(
            f"run {request.run_id}: this worker makes it as {spec.run_id} (code {spec.code_version}, settings "
            f"sha256 {spec.settings_sha256[:12]}…): its code or settings differ from the sweep's")
    return effective, spec


def stored_result(archive: Archive, run_id: str) -> worker_pb2.BacktestRunResult | None:
    """The archived result of run ``run_id`` if a worker finished it already, else None."""
    for entry in reversed(archive.list_cycle(run_index(run_id))):
        if entry.label == RESULT_LABEL:
            return cast(worker_pb2.BacktestRunResult, archive.get(entry.key))
    return None


def run_folder_files(folder: Path, run_id: str) -> worker_pb2.BacktestRunFiles:
    """The files of a run folder (:data:`RUN_FOLDER_FILES` present in ``folder``) as one message."""
    files = worker_pb2.BacktestRunFiles(run_id=run_id)
    for name in RUN_FOLDER_FILES:
        path = folder / name
        if path.is_file():
            content = path.read_bytes()
            files.files.add(name=name, content=content, sha256=file_sha256(path))
    return files


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def result_of_run(request: worker_pb2.BacktestRunRequest, summary: dict[str, Any], timing: dict[str, Any],
                  files_key: str, code_version: str) -> worker_pb2.BacktestRunResult:
    """The result message of a finished run: the headline of its ``summary.json`` and ``timing.json``."""
    results = summary["results"]
    perfect = results["perfect_foresight"]
    return worker_pb2.BacktestRunResult(
        request_id=request.request_id, algorithm=request.algorithm, inputs_hash=request.inputs_hash,
        status=worker_pb2.RESULT_STATUS_OK, run_id=str(summary["run_id"]), decisions=int(results["decisions"]),
        energy_revenue_dollars=float(results["energy_revenue_dollars"]),
        fcas_revenue_dollars=float(results["fcas_revenue_dollars"]),
        total_revenue_dollars=float(results["total_revenue_dollars"]),
        perfect_foresight_dollars=_number(perfect["energy_fcas_dollars"]),
        perfect_foresight_energy_only_dollars=_number(perfect["energy_only_dollars"]),
        capture_total=_number(results["capture_total"]), capture_energy=_number(results["capture_energy"]),
        failed_decisions=int(results["failed_decisions"]), safe_fallbacks=int(results["safe_fallbacks"]),
        wall_time_s=float(timing["wall_time_s"]), decisions_per_second=_number(timing["decisions_per_second"]),
        files_key=files_key, code_version=code_version)


def run_backtest_task(request: worker_pb2.BacktestRunRequest, *, settings: Settings, archive: Archive,
                      cache: _InputsCache | None = None) -> worker_pb2.BacktestRunResult:
    """Make the run ``request`` names (or answer from the archive when it is finished already) and archive
    its run folder's files and result under ``backtest-run/<run id>``.

    Raises :class:`BacktestRunRefusedError` for data whose sha256 does not match, a strategy, period or
    settings that cannot be used, or a run id this worker would not make; anything else (the archive
    unreachable, the process out of memory) propagates and the pool retries the message.
    """
    if not request.run_id:
        raise BacktestRunRefusedError("the request names no run id")
    finished = stored_result(archive, request.run_id)
    if finished is not None:
        logger.info("run %s: finished already (archived), not recomputed", request.run_id)
        return finished
    check_data_files(request)
    try:
        inputs = (cache or _InputsCache()).load(request.data_sources, request.data_files)
    except (RunError, MmsFormatError, ConfigError) as error:
        raise BacktestRunRefusedError(f"run {request.run_id}: {error}") from None
    effective, spec = run_spec_of(request, settings, inputs)
    logger.info("run %s: started (%d decisions)", spec.run_id, spec.period.intervals)
    started = time.perf_counter()
    try:
        outcome = execute_run(effective, inputs, spec, workers=max(1, request.engine_workers))
    except (BacktestError, StrategyError, RunError) as error:
        raise BacktestRunRefusedError(f"run {request.run_id}: {error}") from None
    with tempfile.TemporaryDirectory(prefix="vpp-run-") as folder:
        files = run_folder_files(save_run(Path(folder), outcome), spec.run_id)
    index = run_index(spec.run_id)
    files_key = archive.put(files, cycle_id=index, label=FILES_LABEL)
    result = result_of_run(request, outcome.summary, outcome.timing, files_key, spec.code_version)
    archive.put(result, cycle_id=index, label=RESULT_LABEL)
    logger.info("run %s: %d decisions in %.1f s", spec.run_id, result.decisions, time.perf_counter() - started)
    return result


def backtest_handler(settings: Settings, archive: Archive) -> Callable[[worker_pb2.BacktestRunRequest],
                                                                       worker_pb2.BacktestRunResult]:
    """:func:`run_backtest_task` bound to a process's settings and archive (data loaded once per data set)."""
    cache = _InputsCache()

    def handle(request: worker_pb2.BacktestRunRequest) -> worker_pb2.BacktestRunResult:
        return run_backtest_task(request, settings=settings, archive=archive, cache=cache)

    return handle


def backtest_registry(settings: Settings, archive: Archive) -> HandlerRegistry:
    """A registry serving backtest runs (kind ``backtest``, :data:`NAME` v:data:`VERSION`): the backtest
    pool's."""
    registry = HandlerRegistry()
    registry.register(KIND, NAME, VERSION, backtest_handler(settings, archive))
    return registry
