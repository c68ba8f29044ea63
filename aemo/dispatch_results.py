"""AEMO's dispatch of a unit (DISPATCHLOAD) and its region's DISPATCHPRICE, as the record stage reads them.

DISPATCHLOAD (:mod:`aemo.tables`, from the DispatchIS and Next_Day_Dispatch reports and the monthly archive)
keeps both runs of an intervention with INTERVENTION in its key: the unit's physical target is the
``INTERVENTION = 1`` row where there is one, else the ``INTERVENTION = 0`` row. FCAS enablement is read from
the columns named like the services (RAISE6SEC … LOWERREG; RAISE1SEC / LOWER1SEC from October 2023), so the
services come from the data; a blank enablement is 0 MW. Prices are the pricing run's (INTERVENTION = 0)
DISPATCHPRICE: RRP ($/MWh) and the FCAS prices (``<SERVICE>RRP``, $/MW/h).
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import numpy as np
import pandas as pd

from aemo.store import MarketStore
from aemo.tables import FCAS_SERVICE, price_products
from algorithms.common.products import ENERGY
from algorithms.market.dispatch_check import UnitDispatch

DISPATCHLOAD = "DISPATCHLOAD"
DISPATCHPRICE = "DISPATCHPRICE"
# The stored energy at the interval's end (MWh), published for bidirectional units since June 2024.
STORAGE_COLUMN = "ENERGY_STORAGE"
_SERVICE_COLUMN = re.compile(rf"^{FCAS_SERVICE}$")


def unit_dispatches(frame: pd.DataFrame, unit_id: str) -> list[UnitDispatch]:
    """Every interval of ``unit_id`` in a normalised DISPATCHLOAD ``frame``, in time order, each from its physical
    run (INTERVENTION = 1 where present, else 0)."""
    rows = frame[frame["DUID"] == unit_id]
    if rows.empty:
        return []
    rows = rows.sort_values(["SETTLEMENTDATE", "INTERVENTION"]).drop_duplicates("SETTLEMENTDATE", keep="last")
    services = [column for column in rows.columns if _SERVICE_COLUMN.match(column)]
    enablement = rows[services].fillna(0.0).to_numpy(dtype=float) if services else None
    times = [moment.to_pydatetime() for moment in pd.to_datetime(rows["SETTLEMENTDATE"])]
    initial = rows["INITIALMW"].fillna(0.0).to_numpy(dtype=float)
    target = rows["TOTALCLEARED"].fillna(0.0).to_numpy(dtype=float)
    intervention = rows["INTERVENTION"].to_numpy()
    storage = (pd.to_numeric(rows[STORAGE_COLUMN], errors="coerce").to_numpy(dtype=float)
               if STORAGE_COLUMN in rows.columns
               else np.full(len(rows), np.nan))
    return [UnitDispatch(unit_id=unit_id, dispatch_interval=times[i], initial_mw=float(initial[i]),
                         target_mw=float(target[i]), intervention=int(intervention[i]),
                         energy_storage_mwh=float(storage[i]) if math.isfinite(storage[i]) else None,
                         enablement_mw=dict(zip(services, enablement[i].tolist(), strict=True))
                         if enablement is not None else {})
            for i in range(len(rows))]


def region_prices(frame: pd.DataFrame, region: str, dispatch_interval: datetime) -> dict[str, float]:
    """Product → price of ``region`` in the interval ending ``dispatch_interval`` from a normalised DISPATCHPRICE
    ``frame`` (pricing run): ENERGY $/MWh, each FCAS service $/MW/h; empty when the frame has no such row."""
    rows = frame[(frame["REGIONID"] == region) & (frame["SETTLEMENTDATE"] == pd.Timestamp(dispatch_interval))]
    if "INTERVENTION" in rows.columns:
        rows = rows[rows["INTERVENTION"] == 0]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    prices = {ENERGY: float(row["RRP"])}
    for product in price_products(frame.columns):
        if product != ENERGY:
            value = float(row[f"{product}RRP"])
            prices[product] = value if math.isfinite(value) else math.nan
    return prices


def dispatches_from_store(store: MarketStore, unit_id: str, region: str, first_interval: datetime,
                          last_interval: datetime) -> dict[datetime, tuple[UnitDispatch, dict[str, float]]]:
    """AEMO's dispatch of ``unit_id`` and ``region``'s prices for every interval in [first_interval,
    last_interval] (interval-ending AEST) that the market store holds a DISPATCHLOAD row of the unit for (an
    interval AEMO has not published yet, or the live follower has not fetched, is absent). Two store reads."""
    loads = store.load(DISPATCHLOAD, first_interval, last_interval, units=[unit_id])
    found = unit_dispatches(loads, unit_id) if not loads.empty else []
    if not found:
        return {}
    prices = store.load(DISPATCHPRICE, first_interval, last_interval, regions=[region])
    return {dispatch.dispatch_interval: (dispatch, region_prices(prices, region, dispatch.dispatch_interval)
                                         if not prices.empty else {})
            for dispatch in found}


def dispatch_from_store(store: MarketStore, unit_id: str, region: str,
                        dispatch_interval: datetime) -> tuple[UnitDispatch, dict[str, float]] | None:
    """AEMO's dispatch of ``unit_id`` in the interval ending ``dispatch_interval`` (AEST) and ``region``'s prices,
    from the market store; None while the store holds no DISPATCHLOAD row of the unit for the interval."""
    return dispatches_from_store(store, unit_id, region, dispatch_interval, dispatch_interval).get(dispatch_interval)
