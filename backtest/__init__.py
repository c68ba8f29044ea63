"""Backtesting: the AutoBidder cycle's real bidding path replayed in-process over historical market data.

See :mod:`backtest.engine`.
"""

from backtest.engine import (
    FORECAST_SKILL_LEADS,
    BacktestConfig,
    BacktestError,
    BacktestResult,
    DecisionRecord,
    ForecastSource,
    perfect_foresight_revenue,
    run_backtest,
    run_backtests,
    workers_per_region,
)

__all__ = [
    "FORECAST_SKILL_LEADS",
    "BacktestConfig",
    "BacktestError",
    "BacktestResult",
    "DecisionRecord",
    "ForecastSource",
    "perfect_foresight_revenue",
    "run_backtest",
    "run_backtests",
    "workers_per_region",
]
