"""Market depth: caps on FCAS enablement from the volume the region actually enabled, and the value of a
run's end-of-run state of charge. Pure, vectorised functions; the clearing (:mod:`algorithms.market.clearing`),
the backtest engine, perfect foresight and every report call these, never a copy.

**FCAS depth.** A price-taking model enables a 150 MW battery for everything it offers at the regional FCAS
price, however small the market: SA1 enabled 36 MW of regulation raise on average in January 2025. Where the
data has DISPATCHREGIONSUM, the unit's enablement of each FCAS product in each interval is capped at
``share`` × the MW the region enabled of it (AEMO's ``<product>LOCALDISPATCH`` column, e.g.
``RAISEREGLOCALDISPATCH``, ``RAISE1SECLOCALDISPATCH``); ``share`` is ``[market_depth] fcas_enablement_share``.
The price stays the historical one (our effect on it is not modelled) and **energy stays price-taking**: no
cap on energy dispatch. A missing value (NaN) is an unknown cap, never a made-up one: a run whose data lacks
the depth of any decided interval and product reports "price-taker only" (:func:`caps_cover`).

**End of run.** A run that ends with less stored energy than it started with has sold energy that was not
its own to sell. :func:`end_of_run_adjustment_dollars` charges the shortfall: the energy it would take to
refill the battery (shortfall MWh / charge efficiency, at the load loss factor) bought at the run's mean
ENERGY price, never a credit (a negative mean price charges nothing; a surplus earns nothing, as perfect
foresight, which ends with at least the starting SoC, earns nothing for one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from algorithms.common.products import ENERGY, is_fcas

FloatArray = npt.NDArray[np.float64]

# DISPATCHREGIONSUM's column of a region's local dispatch (enablement, MW) of an FCAS product.
LOCAL_DISPATCH_SUFFIX = "LOCALDISPATCH"


def local_dispatch_column(product: str) -> str:
    """DISPATCHREGIONSUM's column holding the MW the region enabled of FCAS ``product`` (e.g. RAISEREG →
    ``RAISEREGLOCALDISPATCH``). ValueError for ENERGY or an unknown product."""
    if not is_fcas(product):
        raise ValueError(f"{product!r} is not an FCAS product: only FCAS enablement has a market-depth cap")
    return f"{product}{LOCAL_DISPATCH_SUFFIX}"


def check_share(share: float) -> float:
    """``share`` (fraction of the region's enablement the unit may win) when it lies in (0, 1]; else ValueError."""
    if not (np.isfinite(share) and 0 < share <= 1):
        raise ValueError(f"the FCAS enablement share must be in (0, 1], got {share}")
    return float(share)


def enablement_caps_mw(region_enabled_mw: npt.ArrayLike, share: float) -> FloatArray:
    """Caps (MW) on the unit's FCAS enablement: ``share`` × the MW the region enabled (any shape, e.g.
    intervals × products), negative values (never in AEMO's data) as 0, NaN (unknown) kept NaN. Vectorised."""
    enabled = np.asarray(region_enabled_mw, dtype=np.float64)
    return np.where(np.isnan(enabled), np.nan, np.maximum(enabled, 0.0) * check_share(share))


def caps_by_product(products: Sequence[str], region_enabled_mw: npt.ArrayLike, share: float) -> dict[str, FloatArray]:
    """FCAS product → caps (MW per interval) from a (intervals × products) array of the region's enablement
    in ``products`` order; ENERGY has no cap and is left out."""
    enabled = np.asarray(region_enabled_mw, dtype=np.float64)
    if enabled.ndim != 2 or enabled.shape[1] != len(products):
        raise ValueError(f"region enablement has shape {enabled.shape}, expected (intervals, {len(products)})")
    caps = enablement_caps_mw(enabled, share)
    return {product: np.array(caps[:, index]) for index, product in enumerate(products) if product != ENERGY}


def interval_caps_mw(region_enabled_mw: Mapping[str, float] | None, share: float) -> dict[str, float] | None:
    """FCAS product → cap (MW) of one interval from the MW the region enabled of each product
    (:meth:`algorithms.market.prices.DispatchPrices.enabled_at`; NaN kept: no cap known), or None when the
    data has no market depth. What the simulated market and the backtest pass to the clearing."""
    if region_enabled_mw is None:
        return None
    products = list(region_enabled_mw)
    caps = enablement_caps_mw([region_enabled_mw[product] for product in products], share)
    return dict(zip(products, caps.tolist(), strict=True))


def caps_cover(caps: Mapping[str, FloatArray], products: Sequence[str]) -> bool:
    """Whether ``caps`` give a finite cap for every FCAS product of ``products`` in every interval (a depth-
    limited figure is then defined; otherwise the figure is price-taker only)."""
    for product in products:
        if product == ENERGY:
            continue
        values = caps.get(product)
        if values is None or not bool(np.all(np.isfinite(values))):
            return False
    return True


def capped_enablement_mw(enabled_mw: npt.ArrayLike, caps_mw: npt.ArrayLike) -> FloatArray:
    """``enabled_mw`` limited to ``caps_mw`` element by element (MW); a NaN cap leaves the value as it is."""
    enabled = np.asarray(enabled_mw, dtype=np.float64)
    caps = np.asarray(caps_mw, dtype=np.float64)
    return np.where(np.isnan(caps), enabled, np.minimum(enabled, caps))


def end_of_run_adjustment_dollars(initial_state_of_charge_mwh: float, final_state_of_charge_mwh: float,
                                  mean_energy_price_per_mwh: float, charge_efficiency: float,
                                  mlf_load: float = 1.0) -> float:
    """The charge ($, ≤ 0) for a run that ends with less stored energy than it started with: the shortfall
    (MWh) refilled through the charge efficiency, bought at the run's mean ENERGY price ($/MWh) and the load
    loss factor. 0 when the run ends at or above its starting SoC or the mean price is not positive (never a
    credit). ValueError for a non-finite SoC or price or an efficiency outside (0, 1]."""
    values = (initial_state_of_charge_mwh, final_state_of_charge_mwh, mean_energy_price_per_mwh, mlf_load)
    if not all(np.isfinite(value) for value in values):
        raise ValueError(f"end-of-run value needs finite SoC (MWh), price ($/MWh) and loss factor, got {values}")
    if not 0 < charge_efficiency <= 1:
        raise ValueError(f"charge efficiency must be in (0, 1], got {charge_efficiency}")
    shortfall_mwh = max(initial_state_of_charge_mwh - final_state_of_charge_mwh, 0.0)
    return -shortfall_mwh / charge_efficiency * mlf_load * max(mean_energy_price_per_mwh, 0.0)


__all__ = [
    "LOCAL_DISPATCH_SUFFIX",
    "capped_enablement_mw",
    "caps_by_product",
    "caps_cover",
    "check_share",
    "enablement_caps_mw",
    "end_of_run_adjustment_dollars",
    "interval_caps_mw",
    "local_dispatch_column",
]
