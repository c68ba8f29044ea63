"""A fingerprint of every decision of a backtest: proof that a change made for speed changed no result.

``python -m bench.backtest_digest --out FILE [--compare OTHER] [--region SA1] [--start 2021-01-15] [--days 1]
[--workers 2]`` replays the period as ``vpp bench backtest`` does (:func:`bench.backtest.run_backtest_bench`, the
configured strategy) and writes, for every decision in order, the sha256 (16 hex digits) of

* ``forecasts``: its ForecastResults (the worker's answers, without ``compute_ms``);
* ``request``: its OptimisationRequest (without ``inputs_hash`` and the forecasts' ``compute_ms``: both carry
  the forecasts' timings);
* ``plan``: its OptimisationResult (without ``solve_ms`` and ``inputs_hash``): plan, duals, objective, status;
* ``bid``: the bid submitted and the DAILY bid (bytes, without ``plan_hash``, which names the timed plan), the
  outcome (rebid, safe fallback), the violations and the rejected candidates;
* ``record``: the :class:`backtest.engine.DecisionRecord` (every field taking part in equality: clearing,
  revenue, SoC),

and the run's revenue. With ``--compare`` it reads an earlier file and names the decisions and parts that
differ (exit 1 when any does). Timings are all that is left out, so two files are equal exactly when every
forecast, optimisation result, bid and clearing of the two runs is.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from algorithms.market.bid_decision import BidDecision
from backtest import engine
from bench.backtest import DEFAULT_REGION, run_backtest_bench
from settings import Settings, load_settings
from vpp.v1 import bid_pb2, worker_pb2

PARTS = ("forecasts", "request", "plan", "bid", "record")


def _short_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def _forecast_bytes(result: worker_pb2.ForecastResult) -> bytes:
    copy = worker_pb2.ForecastResult()
    copy.CopyFrom(result)
    copy.compute_ms = 0.0
    return copy.SerializeToString(deterministic=True)


def request_digest(request: worker_pb2.OptimisationRequest) -> str:
    """Hash of an optimisation request without its timings (``inputs_hash``, the forecasts' ``compute_ms``)."""
    copy = worker_pb2.OptimisationRequest()
    copy.CopyFrom(request)
    copy.inputs_hash = ""
    for forecast in copy.forecasts:
        forecast.compute_ms = 0.0
    return _short_hash(copy.SerializeToString(deterministic=True))


def plan_digest(plan: worker_pb2.OptimisationResult) -> str:
    """Hash of an optimisation result without its timings (``solve_ms``, ``inputs_hash``)."""
    copy = worker_pb2.OptimisationResult()
    copy.CopyFrom(plan)
    copy.solve_ms = 0.0
    copy.inputs_hash = ""
    return _short_hash(copy.SerializeToString(deterministic=True))


def _bid_bytes(bid: bid_pb2.Bid | None) -> bytes:
    if bid is None:
        return b"-"
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    if bid.plan_hash:
        copy.rebid_explanation = copy.rebid_explanation.replace(bid.plan_hash[:8], "")
    copy.plan_hash = ""
    return copy.SerializeToString(deterministic=True)


def bid_digest(decision: BidDecision) -> str:
    """Hash of a bid decision: its bids (without the plan's hash), outcome, violations and rejections."""
    outcome = repr((decision.outcome, decision.rebid, decision.safe_fallback, decision.violations,
                    [(rejected.candidate, rejected.violations, rejected.build_error)
                     for rejected in decision.rejected]))
    return _short_hash(b"|".join((_bid_bytes(decision.bid), _bid_bytes(decision.daily_bid), outcome.encode())))


def record_digest(record: engine.DecisionRecord) -> str:
    """Hash of a decision record's compared fields (everything but its durations)."""
    fields = record.__dataclass_fields__
    return _short_hash(repr([getattr(record, name) for name in fields if fields[name].compare]).encode())


@contextlib.contextmanager
def recording_decisions(rows: list[dict[str, str]]) -> Iterator[None]:
    """While open, every decision the engine makes in this process appends its digests to ``rows``."""
    replay = engine._RegionReplay
    decide, optimise, bid = replay.decide, replay.optimise, replay.bid
    build_request = getattr(engine, "optimisation_request")  # noqa: B009
    current: dict[str, str] = {}

    def recorded_decide(self: Any, prepared: Any, wait_ms: float = 0.0) -> tuple[engine.DecisionRecord, int]:
        current.clear()
        current["forecasts"] = _short_hash(b"".join(_forecast_bytes(f) for f in prepared.forecasts))
        record, rejected = decide(self, prepared, wait_ms)
        current["record"] = record_digest(record)
        rows.append(dict(current))
        return record, rejected

    def recorded_request(*args: Any, **kwargs: Any) -> worker_pb2.OptimisationRequest:
        request: worker_pb2.OptimisationRequest = build_request(*args, **kwargs)
        current["request"] = request_digest(request)
        return request

    def recorded_optimise(self: Any, *args: Any, **kwargs: Any) -> worker_pb2.OptimisationResult:
        plan = optimise(self, *args, **kwargs)
        current["plan"] = plan_digest(plan)
        return plan

    def recorded_bid(self: Any, *args: Any, **kwargs: Any) -> BidDecision:
        decision = bid(self, *args, **kwargs)
        current["bid"] = bid_digest(decision)
        return decision

    replay.decide, replay.optimise, replay.bid = recorded_decide, recorded_optimise, recorded_bid  # type: ignore[method-assign]
    setattr(engine, "optimisation_request", recorded_request)  # noqa: B010
    try:
        yield
    finally:
        replay.decide, replay.optimise, replay.bid = decide, optimise, bid  # type: ignore[method-assign]
        setattr(engine, "optimisation_request", build_request)  # noqa: B010


def backtest_digest(settings: Settings, *, data: Sequence[Path], region: str, start: datetime, days: float,
                    workers: int) -> dict[str, Any]:
    """The digests of every decision of ``days`` days of ``region`` from ``start`` (AEST) on ``workers``
    processes, and the run's revenue ($): ``{"revenue_dollars": ..., "decisions": [{part: hash}, ...]}``."""
    rows: list[dict[str, str]] = []
    with recording_decisions(rows):
        bench = run_backtest_bench(settings, data=data, region=region, days=days, start=start, workers=workers,
                                   console=Console(stderr=True, quiet=True))
    return {"revenue_dollars": bench.total_revenue_dollars, "decisions": rows}


def differences(digest: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What differs between two digests: the revenue, the number of decisions, each decision's parts."""
    found: list[str] = []
    if digest["revenue_dollars"] != other["revenue_dollars"]:
        found.append(f"revenue ${digest['revenue_dollars']:,.6f} vs ${other['revenue_dollars']:,.6f}")
    mine, theirs = digest["decisions"], other["decisions"]
    if len(mine) != len(theirs):
        found.append(f"{len(mine)} decisions vs {len(theirs)}")
    for index, (row, other_row) in enumerate(zip(mine, theirs, strict=False)):
        parts = [part for part in PARTS if row.get(part) != other_row.get(part)]
        if parts:
            found.append(f"decision {index}: {', '.join(parts)} differ")
    return found


def main(argv: list[str] | None = None) -> int:
    """Write the digest (and compare it with ``--compare``); 0 when equal or not compared, 1 otherwise."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--compare", type=Path, help="an earlier digest to compare with")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--start", default="2021-01-15", help="period start (AEST), YYYY-MM-DD")
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    settings = load_settings()
    digest = backtest_digest(settings, data=[settings.market_data.data_dir], region=args.region,
                             start=datetime.fromisoformat(args.start), days=args.days, workers=args.workers)
    args.out.write_text(json.dumps(digest, indent=1))
    print(f"{len(digest['decisions'])} decisions, revenue ${digest['revenue_dollars']:,.2f}, digest "
          f"{_short_hash(json.dumps(digest['decisions']).encode())} -> {args.out}")
    if args.compare is None:
        return 0
    found = differences(digest, json.loads(args.compare.read_text()))
    for line in found[:20]:
        print(line)
    print("identical" if not found else f"{len(found)} differences")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
