"""A realistic population of home-battery sites: batteries, efficiencies, backup reserves, rooftop PV.

The mix is modelled on South Australian home-battery programmes:

- **Batteries**: 75 % of homes have one 13.5 kWh / 5 kW unit, 10 % have two (27 kWh / 10 kW), 10 % a
  10 kWh / 5 kW unit and 5 % a small 6.5 kWh / 3.3 kW unit. Charge and discharge power limits are equal.
- **Efficiencies**: one-way charge and discharge efficiency 0.95 ± 0.01 each (uniform), i.e. about
  90 % round trip.
- **Backup reserve** (chosen by each owner, fraction of capacity): half keep the common 20 % default;
  the rest choose 0, 5, 10, 15, 25, 30 or 40 %.
- **Rooftop PV** (kW DC): 8 % of homes have none; the rest have a common system size
  (3, 4, 5, 6.6, 8 or 10 kW, 6.6 kW the most frequent).

Everything is drawn from ``numpy.random.default_rng(seed)``: the same ``(site_count, seed)`` always
gives the same population.
"""

from __future__ import annotations

import numpy as np

from algorithms.fleet.fleet_types import FloatArray, SiteParameters, StrArray

BATTERY_UNITS_KWH_KW: tuple[tuple[float, float, float], ...] = (
    (13.5, 5.0, 0.75),
    (27.0, 10.0, 0.10),
    (10.0, 5.0, 0.10),
    (6.5, 3.3, 0.05),
)
"""(usable capacity kWh, power limit kW, share of homes) of the battery installations."""

BACKUP_RESERVE_CHOICES: tuple[tuple[float, float], ...] = (
    (0.00, 0.08),
    (0.05, 0.04),
    (0.10, 0.10),
    (0.15, 0.05),
    (0.20, 0.50),
    (0.25, 0.08),
    (0.30, 0.10),
    (0.40, 0.05),
)
"""(backup reserve fraction of capacity, share of owners)."""

PV_SIZES_KW: tuple[tuple[float, float], ...] = (
    (0.0, 0.08),
    (3.0, 0.07),
    (4.0, 0.10),
    (5.0, 0.20),
    (6.6, 0.35),
    (8.0, 0.12),
    (10.0, 0.08),
)
"""(rooftop PV nameplate kW DC, share of homes); 0 kW = no PV."""

EFFICIENCY_MEAN = 0.95
EFFICIENCY_HALF_SPREAD = 0.01


class InvalidPopulationError(ValueError):
    """The requested population cannot be built (e.g. a negative site count)."""


def site_ids_for(site_count: int) -> StrArray:
    """Sorted site ids ``"site-000001"`` … ``"site-<site_count>"`` (zero-padded to at least six digits)."""
    if site_count < 0:
        raise InvalidPopulationError(f"site_count must be >= 0, got {site_count}")
    width = max(6, len(str(site_count)))
    numbers = np.arange(1, site_count + 1).astype(str)
    return np.char.add("site-", np.char.zfill(numbers, width)).astype(np.str_)


def _choose(rng: np.random.Generator, table: tuple[tuple[float, float], ...], count: int) -> FloatArray:
    values = np.array([row[0] for row in table])
    shares = np.array([row[1] for row in table])
    return values[rng.choice(len(values), size=count, p=shares / shares.sum())]


def make_site_parameters(site_count: int, seed: int) -> SiteParameters:
    """A population of ``site_count`` homes (see the module docstring for the mix), deterministic in ``seed``.

    Returns:
        :class:`SiteParameters` with ids ``site-000001``… (sorted), capacity kWh, power limits kW,
        one-way efficiencies (fractions), backup reserve (fraction of capacity), PV nameplate kW DC.
    """
    site_ids = site_ids_for(site_count)
    rng = np.random.default_rng(seed)
    unit = rng.choice(
        len(BATTERY_UNITS_KWH_KW), size=site_count, p=np.array([row[2] for row in BATTERY_UNITS_KWH_KW])
    )
    capacity_kwh = np.array([row[0] for row in BATTERY_UNITS_KWH_KW])[unit]
    power_kw = np.array([row[1] for row in BATTERY_UNITS_KWH_KW])[unit]
    low, high = EFFICIENCY_MEAN - EFFICIENCY_HALF_SPREAD, EFFICIENCY_MEAN + EFFICIENCY_HALF_SPREAD
    return SiteParameters(
        site_ids=site_ids,
        capacity_kwh=capacity_kwh.astype(np.float64),
        max_charge_kw=power_kw.astype(np.float64),
        max_discharge_kw=power_kw.copy().astype(np.float64),
        charge_efficiency=rng.uniform(low, high, site_count),
        discharge_efficiency=rng.uniform(low, high, site_count),
        backup_reserve_fraction=_choose(rng, BACKUP_RESERVE_CHOICES, site_count),
        pv_capacity_kw=_choose(rng, PV_SIZES_KW, site_count),
    )


def seed_fleet(database_url: str, site_count: int, seed: int) -> int:
    """Import a synthetic fleet of ``site_count`` sites and its graph if the database has no site yet.

    Returns the number of sites imported (0 when sites already exist).
    """
    import psycopg

    from models.asset_factory import synthetic_asset_graph
    from models.asset_io import import_graph

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM sites").fetchone()
        if row is not None and int(row[0]) > 0:
            return 0
        report = import_graph(conn, synthetic_asset_graph(make_site_parameters(site_count, seed), seed))
    return int(report.accepted_sites)
