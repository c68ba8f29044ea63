"""bench.backtest_digest: every decision's results hashed without their timings, and the differences named."""

from __future__ import annotations

import copy
from datetime import datetime

from bench.backtest_digest import PARTS, backtest_digest, differences
from settings import load_settings


def test_a_replay_digests_every_decision_the_same_way_twice_and_names_what_differs() -> None:
    settings = load_settings(environ={})
    run = dict(data=[settings.market_data.data_dir], region="SA1", start=datetime(2021, 1, 15), days=4 / 288,
               workers=1)
    first = backtest_digest(settings, **run)  # type: ignore[arg-type]
    assert len(first["decisions"]) == 4 and all(set(row) == set(PARTS) for row in first["decisions"])
    assert len({row["plan"] for row in first["decisions"]}) == 4  # every decision's own plan
    assert differences(first, backtest_digest(settings, **run)) == []  # type: ignore[arg-type]
    changed = copy.deepcopy(first)
    changed["decisions"][2]["bid"] = "0" * 16
    changed["revenue_dollars"] += 0.01
    found = differences(first, changed)
    assert found[0].startswith("revenue") and found[1:] == ["decision 2: bid differ"]
    assert differences(first, {**first, "decisions": first["decisions"][:3]}) == ["4 decisions vs 3"]
