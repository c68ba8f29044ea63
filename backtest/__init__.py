"""Backtesting: the AutoBidder cycle's real bidding path replayed in-process over historical market data.

See :mod:`backtest.engine`.
"""

from backtest.engine import (
    BacktestConfig,
    BacktestError,
    BacktestResult,
    DecisionRecord,
    perfect_foresight_revenue,
    run_backtest,
    run_backtests,
)

__all__ = [
    "BacktestConfig",
    "BacktestError",
    "BacktestResult",
    "DecisionRecord",
    "perfect_foresight_revenue",
    "run_backtest",
    "run_backtests",
]
