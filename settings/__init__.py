"""Typed configuration of the platform.

Every number of shared/NEM.md and every port of the local stack lives in ``settings/default.toml``.
A user file (``--config PATH`` or ``VPP_CONFIG``) is merged over it, table by table, and a few
environment variables override single values (see :data:`ENV_OVERRIDES`). Pure code never reads
configuration itself: it receives these frozen dataclasses as arguments.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default.toml"

# Environment variable -> (table, key). Values are parsed with the type of the default.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "VPP_STATE_DIR": ("stack", "state_dir"),
    "VPP_DATA_DIR": ("market_data", "data_dir"),
    "VPP_TEMPORAL_ADDRESS": ("stack", "temporal_address"),
    "VPP_SQS_PORT": ("stack", "sqs_port"),
    "VPP_ARCHIVE_BACKEND": ("archive", "backend"),
    "VPP_ARCHIVE_S3_BUCKET": ("archive", "s3_bucket"),
    "VPP_MARKET_SOURCE": ("market_store", "source"),
    "VPP_BID_BACKEND": ("bid_service", "backend"),
}


MARKET_PRICE_THRESHOLDS_SOURCE = "MARKET_PRICE_THRESHOLDS"
SETTINGS_SOURCE = "settings"


@dataclass(frozen=True)
class PriceCap:
    """Market price cap ($/MWh), cumulative price threshold ($/MWh) and, where its source gives one, market
    price floor ($/MWh), in force for the trading days ``[first_day, end_day)``.

    A configured entry (``[[market.price_caps]]``) covers the financial year starting 1 July of ``fy_start``;
    an entry from AEMO's MARKET_PRICE_THRESHOLDS (``source``) covers its own effective dates
    (``first_trading_day``, ``end_trading_day``, see :mod:`aemo.price_thresholds`).
    """

    fy_start: int
    cap: float
    cumulative_price_threshold: float
    # Length (minutes) of the intervals whose prices the threshold sums: 30 before 5-minute settlement.
    threshold_interval_minutes: int = 5
    market_price_floor: float | None = None
    first_trading_day: date | None = None
    end_trading_day: date | None = None
    source: str = SETTINGS_SOURCE

    @property
    def first_day(self) -> date:
        """The first trading day this entry covers."""
        return self.first_trading_day or date(self.fy_start, 7, 1)

    @property
    def end_day(self) -> date:
        """The first trading day after those this entry covers."""
        return self.end_trading_day or date(self.fy_start + 1, 7, 1)

    def covers(self, trading_day: date) -> bool:
        """Whether ``trading_day`` lies in ``[first_day, end_day)``."""
        return self.first_day <= trading_day < self.end_day


def financial_year_label(fy_start: int) -> str:
    """``FY2025-26`` for the financial year starting 1 July 2025."""
    return f"FY{fy_start}-{(fy_start + 1) % 100:02d}"


@dataclass(frozen=True)
class MarketRules:
    """The NEM rules the platform applies (shared/NEM.md). Prices in $/MWh, FCAS in $/MW/h."""

    interval_minutes: int
    intervals_per_trading_day: int
    trading_day_start: time
    market_timezone_offset_hours: int
    band_count: int
    market_price_floor: float
    fcas_price_floor: float
    daily_bid_close: time
    rebid_explanation_max_chars: int
    administered_price_floor: float
    administered_price_cap: float
    administered_lookback_intervals: int
    price_caps: tuple[PriceCap, ...]

    def financial_year_start(self, trading_day: date) -> int:
        """The calendar year in which the financial year containing ``trading_day`` starts (1 July)."""
        return trading_day.year if trading_day.month >= 7 else trading_day.year - 1

    def price_cap_for(self, trading_day: date) -> PriceCap:
        """The price limits in force on ``trading_day``: the entry from AEMO's MARKET_PRICE_THRESHOLDS that
        covers it, else the configured entry of its financial year.

        The one place the platform looks a trading day's cap, threshold and floor up. Raises
        :class:`PriceLimitsUnknownError` when no entry covers the day: a year no source covers is an error,
        never the nearest year's values.
        """
        covering = [cap for cap in self.price_caps if cap.covers(trading_day)]
        if not covering:
            raise PriceLimitsUnknownError(self._uncovered_message(trading_day))
        return min(covering, key=lambda cap: (cap.source == SETTINGS_SOURCE, -cap.first_day.toordinal()))

    def price_floor_for(self, trading_day: date) -> float:
        """The market price floor ($/MWh) on ``trading_day``: its entry's floor, else ``market_price_floor``."""
        floor = self.price_cap_for(trading_day).market_price_floor
        return self.market_price_floor if floor is None else floor

    def require_price_caps(self, first_day: date, last_day: date) -> None:
        """Raise :class:`PriceLimitsUnknownError` naming the first trading day of ``[first_day, last_day]``
        whose price limits no source covers (checked at start-up, before anything is bid or settled)."""
        day = first_day
        while day <= last_day:
            covering = [cap for cap in self.price_caps if cap.covers(day)]
            if not covering:
                raise PriceLimitsUnknownError(self._uncovered_message(day))
            day = min(cap.end_day for cap in covering)

    def _uncovered_message(self, trading_day: date) -> str:
        fy = self.financial_year_start(trading_day)
        configured = sorted(cap.fy_start for cap in self.price_caps if cap.source == SETTINGS_SOURCE)
        from_aemo = sorted((cap for cap in self.price_caps if cap.source != SETTINGS_SOURCE),
                           key=lambda cap: cap.first_day)
        configured_text = (f"{financial_year_label(configured[0])} to {financial_year_label(configured[-1])}"
                           if configured else "no financial year")
        aemo_text = (f"MARKET_PRICE_THRESHOLDS covers {from_aemo[0].first_day} to "
                     f"{from_aemo[-1].end_day - timedelta(days=1)}" if from_aemo
                     else "no MARKET_PRICE_THRESHOLDS data was given")
        return (f"no market price cap for trading day {trading_day} ({financial_year_label(fy)}): "
                f"[[market.price_caps]] configures {configured_text} and {aemo_text}; add "
                f"{financial_year_label(fy)} to [[market.price_caps]] or give AEMO's MARKET_PRICE_THRESHOLDS")


@dataclass(frozen=True)
class BatterySettings:
    """A battery unit (MW, MWh, fractions of 1); the default is the reference battery of NEM.md."""

    unit_id: str
    region: str
    power_mw: float
    energy_mwh: float
    charge_efficiency: float
    discharge_efficiency: float
    soc_min_fraction: float
    soc_max_fraction: float
    initial_soc_fraction: float
    mlf_gen: float
    mlf_load: float
    ramp_rate_mw_per_min: float
    min_ramp_rate_mw_per_min: float

    @property
    def initial_state_of_charge_mwh(self) -> float:
        """Starting energy (MWh)."""
        return self.energy_mwh * self.initial_soc_fraction


BATTERY_UNIT = "battery"
VPP_UNIT = "vpp"
UNIT_KINDS = (BATTERY_UNIT, VPP_UNIT)
# The NEM's regions (AEMO's REGIONID): a unit in any other region is a configuration error.
NEM_REGIONS = ("NSW1", "QLD1", "SA1", "TAS1", "VIC1")


@dataclass(frozen=True)
class UnitSettings:
    """One unit of the portfolio: its id, NEM region, kind ("battery": bid every 5 minutes by its own
    AutoBidder schedule; "vpp": the fleet unit the price-forecast distribution bids), its battery
    parameters (MW, MWh, fractions), its bid ladders and strategy, and its cycle settings."""

    unit_id: str
    region: str
    kind: str
    battery: BatterySettings
    bidding: BiddingSettings
    cycle: CycleSettings


@dataclass(frozen=True)
class BiddingSettings:
    """Daily band price ladders ($/MWh, FCAS $/MW/h) and the bid horizon (intervals)."""

    gen_band_prices: tuple[float, ...]
    load_band_prices: tuple[float, ...]
    fcas_band_prices: tuple[float, ...]
    bid_horizon_intervals: int
    rebid_materiality_mw: float
    # Share (0..1) of the unplanned headroom offered at the first headroom band (GEN: the cheapest spike
    # band; LOAD: the dearest negative-price band); the rest is spread evenly over every headroom band.
    headroom_front_share: float = 0.0
    # How unplanned headroom is priced: "fixed" spreads it as above; "opportunity_cost" puts all of it in
    # the one headroom band priced at or beyond what dispatching it gives up (algorithms/market/bid_builder.py).
    headroom_pricing: str = "fixed"
    # With "opportunity_cost": headroom that would displace planned FCAS (joint capacity) is dispatched only
    # at or beyond these prices ($/MWh): GEN at or above the first, LOAD at or below the second.
    fcas_displacement_gen_floor: float = 1000.0
    fcas_displacement_load_ceiling: float = -100.0
    # Which planned FCAS those prices protect: "all" (contingency and regulation) or "regulation" (energy may
    # displace planned contingency FCAS at the headroom's own opportunity cost).
    fcas_displacement_scope: str = "all"
    # With "opportunity_cost": "price_taking" puts planned discharge in GEN band 1 and planned charge in the
    # top LOAD band; "energy_value" prices them by the plan's value of stored energy (bid_builder.py).
    planned_pricing: str = "price_taking"
    # The plan's value of stored energy is used for pricing at no less than this ($/MWh): a P50 plan that
    # expects deeper negative prices later would otherwise refuse to charge (and offer to discharge) at
    # prices that are already negative, and the deeper prices often do not come.
    energy_value_floor_per_mwh: float = -1000.0
    # A DAILY bid for trading day D is due from this many minutes before the daily bid close (12:30 on D-1)
    # up to the close (algorithms/market/daily_bid.py); 0 submits none (every bid is then a REBID).
    daily_bid_lead_minutes: int = 60
    # What the bid offers of each FCAS service (bid_builder.fcas_offer_mw): "planned" the plan's MW; "headroom"
    # contingency at the registered power and regulation up to the capacity the plan leaves free, so the market
    # (and the region's depth) decides how much is enabled beyond what the plan expected.
    fcas_offer: str = "planned"
    # With "opportunity_cost": where unplanned charge (LOAD headroom) may be offered. "negative" only in the
    # negative-price LOAD bands; "energy_value" in any LOAD band at most what the plan values stored energy at
    # (the LOAD ceiling) and below the interval's planned GEN band (bid_builder.py), so the battery buys whenever
    # the price falls below that value, positive prices included.
    charge_headroom: str = "negative"


@dataclass(frozen=True)
class CycleSettings:
    """The AutoBidder cycle: unit, horizon, algorithms, and its timing (seconds)."""

    unit_id: str
    region: str
    horizon_intervals: int
    history_intervals: int
    forecast_quantiles: tuple[float, ...]
    optimiser_price_quantile: float
    # Weight of each tail quantile in the optimiser's price (algorithms.market.optimise.planning_price), [0, 0.5).
    optimiser_price_tail_weight: float
    forecast_algorithm: str
    forecast_algorithm_version: str
    optimiser_algorithm: str
    optimiser_algorithm_version: str
    degradation_cost_per_mwh: float
    terminal_value_per_mwh: float
    optimiser_time_limit_s: float
    schedule_offset_s: int
    market_data_poll_s: int
    market_data_cutoff_s: int
    gate_closure_margin_s: int
    minimum_lead_s: int
    worker_answer_timeout_s: int
    replay_start: datetime
    replay_days: int
    # "replay" (wall clock mapped onto replay_start … + replay_days) or "live" (AEST now).
    clock: str = "replay"
    # κ of lp-uncertainty-spread (algorithms.market.uncertainty_spread), [0, 1); None: the version's own κ.
    optimiser_uncertainty_weight: float | None = None


CYCLE_CLOCKS = ("replay", "live")
MARKET_DATA_SOURCES = ("files", "store", "live")


@dataclass(frozen=True)
class MarketDataSettings:
    """Where the market-data service's prices come from and when values become known (seconds; AEST).

    ``source``: "files" (the MMS tables of ``data_dir``, published as ``dispatch_price_delay_s`` and
    ``missing_intervals`` simulate), "store" (the market store of ``[market_store]`` over the replay period
    of ``[cycle]``, published the same way) or "live" (AEMO's current reports of ``live_folders``, polled every
    ``live_poll_s`` seconds; a value is known when its file was published and LATE after its interval end
    + ``dispatch_price_delay_s``). Live downloads: ``live_attempts`` per request, ``live_timeout_s`` each; a
    file that failed is tried again at a later poll, the wait doubling up to ``live_retry_max_s``.
    ``history_reach_intervals`` (5-minute intervals; 0: none): how far back a snapshot's history window may
    start when the ``[cycle] history_intervals`` slots before the decision hold fewer known prices than that
    (a history with gaps of days; :func:`algorithms.market.as_of.history_window_start`). The market-data
    service and the backtest apply it to every snapshot; with full data the window is unchanged.
    """

    data_dir: Path
    dispatch_price_delay_s: float
    missing_intervals: tuple[datetime, ...]
    source: str = "files"
    live_poll_s: float = 5.0
    live_folders: tuple[str, ...] = ("DispatchIS_Reports", "PredispatchIS_Reports", "P5_Reports",
                                     "Next_Day_Dispatch")
    live_attempts: int = 2
    live_timeout_s: float = 10.0
    live_retry_max_s: float = 60.0
    history_reach_intervals: int = 0

    def history_read_intervals(self, history_intervals: int) -> int:
        """The 5-minute intervals of data before a decision its snapshot may read: the larger of the window
        (``history_intervals``) and the reach."""
        return max(history_intervals, self.history_reach_intervals)


@dataclass(frozen=True)
class MarketStoreSettings:
    """The local market store (aemo/store.py) and where ``vpp data sync`` mirrors AEMO's files from.

    ``source``: NEMWEB's address or a local folder laid out like it. ``folder``: the store, under the state
    folder unless absolute. ``current_folders``: the ``Reports/Current/<folder>/`` folders synced.
    Network: ``workers`` downloads at once, ``attempts`` per file (5xx, 429, timeouts), backoff doubling
    from ``backoff_s`` seconds, ``timeout_s`` seconds per request.
    """

    source: str = "https://nemweb.com.au/"
    folder: str = "market"
    archive_path: str = "Data_Archive/Wholesale_Electricity/MMSDM"
    current_path: str = "Reports/Current"
    current_folders: tuple[str, ...] = ("P5_Reports", "Next_Day_Dispatch", "Daily_Reports",
                                        "Next_Day_Intermittent_Gen_Scada")
    workers: int = 4
    attempts: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0

    def store_dir(self, state_dir: Path) -> Path:
        """The store's folder: ``folder`` under ``state_dir`` (or ``folder`` itself if absolute)."""
        path = Path(self.folder).expanduser()
        return path if path.is_absolute() else state_dir / path


@dataclass(frozen=True)
class StackSettings:
    """Ports, folders and pool sizes of the local stack."""

    state_dir: Path
    temporal_address: str
    temporal_ui_port: int
    temporal_namespace: str
    task_queue: str
    sqs_port: int
    sqs_region: str
    market_data_port: int
    bid_service_port: int
    forecast_workers: int
    optimiser_workers: int
    max_receive_count: int
    visibility_timeout_s: int
    queue_prefix: str
    # Hosts the clients dial for the gRPC services (the ports above): 127.0.0.1 locally, the service
    # names in a deployment (e.g. ECS Service Connect: "market-data", "bids").
    market_data_host: str = "127.0.0.1"
    bid_service_host: str = "127.0.0.1"
    # The AEMO bidding API stand-in `vpp up --market aemo-sandbox` starts (aemo_sandbox/), on 127.0.0.1.
    aemo_sandbox_port: int = 8790

    @property
    def market_data_address(self) -> str:
        """``host:port`` of the market-data service as its clients dial it."""
        return f"{self.market_data_host}:{self.market_data_port}"

    @property
    def bid_service_address(self) -> str:
        """``host:port`` of the bid service as its clients dial it."""
        return f"{self.bid_service_host}:{self.bid_service_port}"

    @property
    def log_dir(self) -> Path:
        """Folder of every process's log file."""
        return self.state_dir / "logs"

    @property
    def sqs_endpoint_url(self) -> str:
        """The local SQS endpoint (moto server); AWS is used when VPP_SQS_ENDPOINT is "aws"."""
        return os.environ.get("VPP_SQS_ENDPOINT", f"http://127.0.0.1:{self.sqs_port}")


@dataclass(frozen=True)
class ArchiveSettings:
    """Where immutable requests and results are archived."""

    backend: str
    s3_bucket: str
    s3_prefix: str


@dataclass(frozen=True)
class FleetSettings:
    """The VPP layer: fleet gateway, telemetry freshness, the dispatch control loop (ms, s, kW)."""

    # gRPC port of the fleet gateway (sites and the dispatch control loop connect to it), and the host
    # the platform's clients dial (a service name in a deployment).
    gateway_port: int = 50053
    gateway_host: str = "127.0.0.1"
    # Temporal task queue of the VPP workflows (dispatch events, peak shaving).
    task_queue: str = "vpp"
    # A site's latest reading older than this is stale: not used for control, widens the bounds.
    stale_after_ms: int = 30_000
    # Readings stamped later than now + this are rejected (future_timestamp).
    max_clock_skew_ms: int = 5_000
    # z of the aggregate's uncertainty bounds (1.96: 95 %).
    confidence_z: float = 1.96
    # Seconds between two control steps of a dispatch event.
    control_interval_s: float = 2.0
    # The first allocation is held (commands resent, not corrected) this long after an event's first step,
    # so every site has reported at least once since its command: longer than a site's reporting interval.
    first_correction_after_ms: int = 6_000
    # An unacknowledged command is resent after this long (retry until acknowledged or the window ends).
    resend_after_ms: int = 2_000
    # A command holds for at most this long; the control loop renews it. If the platform stops, sites
    # fall back to their own plans within this time (no setpoint outlives its controller).
    command_validity_ms: int = 30_000
    # A site's setpoint is re-sent as a new command only when it moves by more than this (kW).
    setpoint_deadband_kw: float = 0.001
    # Bound of every outgoing stream's queue (messages): a slow concentrator cannot exhaust memory.
    stream_queue_size: int = 64
    # Simulated homes `vpp up` registers (when the asset graph has no site) and runs, and their seed.
    simulated_sites: int = 1_000
    simulator_seed: int = 1
    # Nodes whose load the node-load-sampler schedule records every 5 minutes (peak shaving's history).
    load_sample_nodes: tuple[str, ...] = ("network-nem", "region-SA1")
    # Site plans (co-optimised VPP): interval length (minutes) and horizon (intervals) the gateway stores.
    plan_interval_minutes: int = 30
    plan_horizon_intervals: int = 48

    # How simulated sites plan (simulator/edge_planner.py): time-of-use tariff ($/kWh; peak hours AEST
    # [start, end)), share of the spot value passed to owners, reserve under a storm warning, how often
    # a site re-plans on the forecast it holds and how often its concentrator polls (s).
    edge_peak_per_kwh: float = 0.45
    edge_offpeak_per_kwh: float = 0.25
    edge_feed_in_per_kwh: float = 0.05
    edge_peak_start_hour: int = 15
    edge_peak_end_hour: int = 21
    edge_market_share: float = 1.0
    edge_storm_reserve_fraction: float = 0.8
    edge_replan_interval_s: float = 900.0
    edge_poll_interval_s: float = 60.0

    @property
    def gateway_address(self) -> str:
        """``host:port`` of the fleet gateway as the platform's clients dial it."""
        return f"{self.gateway_host}:{self.gateway_port}"


@dataclass(frozen=True)
class CooptSettings:
    """The co-optimised VPP: 15-minute price-forecast distribution, site plans, the fleet bid."""

    # Minutes between two distribution runs (the `price-forecast-distribution` schedule).
    distribution_every_minutes: int = 15
    # Seconds a run waits for the sites' plans after publishing a version.
    plan_collection_s: float = 60.0
    # The VPP node whose sites' plans are bid as one unit, the unit's id, and the hierarchy to follow
    # ("": every hierarchy).
    vpp_node: str = "region-SA1"
    fleet_unit_id: str = "VPP1"
    hierarchy: str = "electrical"
    # Nodes (e.g. programmes) whose sites poll for forecasts instead of being pushed to.
    poll_nodes: tuple[str, ...] = ()
    # Intervals of each round's bid dispatched through the control loop (3: until the next round's first).
    dispatch_intervals: int = 3


@dataclass(frozen=True)
class PoolSettings:
    """The backtest worker pool and the sweep workflow (``vpp backtest sweep``)."""

    # Request queue of backtest runs: ``<stack.queue_prefix>-<backtest_queue>``.
    backtest_queue: str = "backtest-requests"
    # Seconds a received run stays invisible to other pool processes (extended while a process works on it).
    backtest_visibility_timeout_s: int = 120
    # Receives of a run before it is dead-lettered.
    backtest_max_receive_count: int = 3
    # Backtest pool processes ``vpp up`` starts.
    backtest_processes: int = 1
    # Processes the engine prepares forecasts with inside one pool process (1: the pool process itself).
    backtest_engine_workers: int = 1
    # Temporal task queue of the sweep workflow and its activities.
    sweep_task_queue: str = "backtest-sweeps"
    # Runs of one sweep in flight at once, and the longest one run may take (s).
    sweep_max_in_flight: int = 8
    sweep_run_timeout_s: int = 7200


BID_SERVICE_BACKENDS = ("simulated", "aemo")


@dataclass(frozen=True)
class BidServiceSettings:
    """Which market the bid service submits to (``[bid_service]``): "simulated" (the simulated NEM) or "aemo"
    (AEMO's NEM Dispatch Bidding API; address, participant id and credentials from the environment)."""

    backend: str = "simulated"
    # Seconds to wait for one answer from AEMO's API before the submission counts as timed out.
    aemo_timeout_s: float = 5.0
    # A submission AEMO has RECEIVED but not yet acknowledged is asked for again every interval (s), this often.
    # Timeout and polls together stay within a SubmitBid call's 10 s deadline (services.bid_service.submit_bid).
    aemo_poll_interval_s: float = 0.5
    aemo_poll_attempts: int = 6
    # AEMO's ``authorisedBy`` of every submission.
    aemo_authorised_by: str = "openvpp"


@dataclass(frozen=True)
class MarketDepthSettings:
    """Market depth: how much of a region's FCAS enablement the unit may win (``[market_depth]``)."""

    # Share of the MW the region actually enabled of each FCAS service in an interval (its LOCALDISPATCH in
    # DISPATCHREGIONSUM) the unit may be enabled for, in (0, 1]. Energy is price-taking (no cap).
    fcas_enablement_share: float = 0.5
    # Whether the plan expects that depth: the optimiser then caps each FCAS service, per interval of its
    # horizon, at the share × the region's local dispatch expected from what was known at decision time
    # (algorithms.market.depth_plan). Without DISPATCHREGIONSUM in the data the plan is a price-taker's.
    plan_with_expected_depth: bool = True
    # Multiplier on that expected cap (> 0; 1 = the share itself; 1.5 chosen on the tuning months).
    planning_cap_factor: float = 1.5


@dataclass(frozen=True)
class Settings:
    """All configuration, as loaded by :func:`load_settings`."""

    market: MarketRules
    battery: BatterySettings
    bidding: BiddingSettings
    cycle: CycleSettings
    market_data: MarketDataSettings
    stack: StackSettings
    archive: ArchiveSettings
    database_url: str | None = field(default=None)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    coopt: CooptSettings = field(default_factory=CooptSettings)
    market_store: MarketStoreSettings = field(default_factory=MarketStoreSettings)
    pools: PoolSettings = field(default_factory=PoolSettings)
    bid_service: BidServiceSettings = field(default_factory=BidServiceSettings)
    market_depth: MarketDepthSettings = field(default_factory=MarketDepthSettings)
    # Every unit of the portfolio (batteries and the VPP fleet unit); see :func:`_units`. Empty only for a
    # Settings built by hand: :attr:`portfolio` then derives it from ``battery``, ``cycle`` and ``coopt``.
    units: tuple[UnitSettings, ...] = ()

    def __post_init__(self) -> None:
        # Keep the portfolio consistent with ``battery``, ``bidding`` and ``cycle`` however the Settings was made
        # (``dataclasses.replace`` runs this too): the first battery unit is the one they describe, and every
        # unit shares [cycle]'s timing, clock and replay period, keeping only its own per-unit cycle keys.
        if not self.units:
            return
        first = next((index for index, unit in enumerate(self.units) if unit.kind == BATTERY_UNIT), None)
        if first is None:
            raise ConfigError("the portfolio has no battery unit")
        default = UnitSettings(self.cycle.unit_id, self.cycle.region, BATTERY_UNIT, self.battery, self.bidding,
                               self.cycle)
        units = tuple(default if index == first else replace(unit, cycle=replace(
            self.cycle, unit_id=unit.unit_id, region=unit.region,
            **{key: getattr(unit.cycle, key) for key in UNIT_CYCLE_KEYS}))
            for index, unit in enumerate(self.units))
        fleet_unit_id = self.coopt.fleet_unit_id  # [coopt] names the VPP's fleet unit the distribution bids
        units = tuple(replace(unit, unit_id=fleet_unit_id, battery=replace(unit.battery, unit_id=fleet_unit_id),
                              cycle=replace(unit.cycle, unit_id=fleet_unit_id))
                      if unit.kind == VPP_UNIT and unit.unit_id != fleet_unit_id else unit for unit in units)
        object.__setattr__(self, "units", units)

    @property
    def portfolio(self) -> tuple[UnitSettings, ...]:
        """Every configured unit, in configuration order. The first battery unit is always the one ``battery``,
        ``bidding`` and ``cycle`` describe (they are loaded from it); without ``units`` it is the only battery
        unit, beside the VPP's fleet unit of ``coopt``."""
        if self.units:
            return self.units
        return (UnitSettings(self.cycle.unit_id, self.cycle.region, BATTERY_UNIT, self.battery, self.bidding,
                             self.cycle),
                _vpp_unit(self.coopt.fleet_unit_id, self.cycle.region, self.battery, self.bidding, self.cycle))

    @property
    def battery_units(self) -> tuple[UnitSettings, ...]:
        """The battery units, each bid by its own AutoBidder schedule (the VPP's unit is bid by the
        price-forecast distribution)."""
        return tuple(unit for unit in self.portfolio if unit.kind == BATTERY_UNIT)

    @property
    def vpp_unit(self) -> UnitSettings:
        """The VPP's fleet unit (``[coopt] fleet_unit_id``): the sites of ``[coopt] vpp_node`` bid as one unit."""
        return next(unit for unit in self.portfolio if unit.kind == VPP_UNIT)

    @property
    def unit_ids(self) -> tuple[str, ...]:
        """Ids of every configured unit."""
        return tuple(unit.unit_id for unit in self.portfolio)

    def unit(self, unit_id: str) -> UnitSettings:
        """The configured unit ``unit_id``; :class:`UnknownUnitError` naming the configured ones otherwise."""
        for unit in self.portfolio:
            if unit.unit_id == unit_id:
                return unit
        raise UnknownUnitError(f"unknown unit {unit_id!r}: the configured units are {', '.join(self.unit_ids)}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _resolve(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


class ConfigError(ValueError):
    """A configuration file or variable that cannot be used; the message says which and why."""


class UnknownUnitError(ConfigError):
    """A unit id that no ``[[units]]`` entry (or the default unit) configures."""


class PriceLimitsUnknownError(ConfigError):
    """No source gives the market price cap of a trading day: its financial year is neither configured in
    ``[[market.price_caps]]`` nor covered by AEMO's MARKET_PRICE_THRESHOLDS."""


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> None:
    for variable, (table, key) in ENV_OVERRIDES.items():
        if variable in environ:
            default = raw[table][key]
            text = environ[variable]
            try:
                raw[table][key] = type(default)(text)
            except ValueError as exc:
                raise ConfigError(f"{variable}={text!r}: expected {type(default).__name__}") from exc


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load the default configuration, merge ``path`` (or ``$VPP_CONFIG``) over it, apply env overrides."""
    env = dict(os.environ if environ is None else environ)
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    user_path = path or (Path(env["VPP_CONFIG"]) if env.get("VPP_CONFIG") else None)
    if user_path is not None:
        try:
            raw = _merge(raw, tomllib.loads(Path(user_path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {user_path}: {exc}") from exc
    _apply_env(raw, env)
    try:
        return _build(raw, env.get("DATABASE_URL") or None)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"configuration is incomplete or malformed: {exc!r}") from exc


def _battery(table: dict[str, Any]) -> BatterySettings:
    text_fields = {"unit_id", "region"}
    values: dict[str, Any] = {k: (str(v) if k in text_fields else float(v)) for k, v in table.items()}
    return BatterySettings(**values)


def _fleet(table: dict[str, Any]) -> FleetSettings:
    values = dict(table)
    if "load_sample_nodes" in values:
        values["load_sample_nodes"] = tuple(str(node) for node in values["load_sample_nodes"])
    return FleetSettings(**values)


def _coopt(table: dict[str, Any]) -> CooptSettings:
    values = dict(table)
    if "poll_nodes" in values:
        values["poll_nodes"] = tuple(str(node) for node in values["poll_nodes"])
    return CooptSettings(**values)


def _market_store(table: dict[str, Any]) -> MarketStoreSettings:
    values = dict(table)
    if "current_folders" in values:
        values["current_folders"] = tuple(str(folder) for folder in values["current_folders"])
    return MarketStoreSettings(**values)


def _pools(table: dict[str, Any]) -> PoolSettings:
    pools = PoolSettings(**table)
    for name in ("backtest_visibility_timeout_s", "backtest_max_receive_count", "backtest_engine_workers",
                 "sweep_max_in_flight", "sweep_run_timeout_s"):
        if getattr(pools, name) < 1:
            raise ValueError(f"pools.{name} must be at least 1, got {getattr(pools, name)}")
    if pools.backtest_processes < 0:
        raise ValueError(f"pools.backtest_processes must be at least 0, got {pools.backtest_processes}")
    if not pools.backtest_queue or not pools.sweep_task_queue:
        raise ValueError("pools.backtest_queue and pools.sweep_task_queue must not be empty")
    return pools


def _bid_service(table: dict[str, Any]) -> BidServiceSettings:
    bid_service = BidServiceSettings(**table)
    _one_of(bid_service.backend, BID_SERVICE_BACKENDS, "bid_service.backend")
    if not (bid_service.aemo_timeout_s > 0 and bid_service.aemo_poll_interval_s > 0):
        raise ValueError("bid_service.aemo_timeout_s and aemo_poll_interval_s must be > 0 seconds")
    if bid_service.aemo_poll_attempts < 0:
        raise ValueError(f"bid_service.aemo_poll_attempts must be at least 0, got {bid_service.aemo_poll_attempts}")
    return bid_service
def _market_depth(table: dict[str, Any]) -> MarketDepthSettings:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "plan_with_expected_depth":
            if not isinstance(value, bool):
                raise ValueError(f"market_depth.plan_with_expected_depth must be true or false, got {value!r}")
            values[key] = value
        else:
            values[key] = float(value)
    depth = MarketDepthSettings(**values)
    if not 0 < depth.fcas_enablement_share <= 1:
        raise ValueError(f"market_depth.fcas_enablement_share must be in (0, 1], got {depth.fcas_enablement_share}")
    if not (math.isfinite(depth.planning_cap_factor) and depth.planning_cap_factor > 0):
        raise ValueError(f"market_depth.planning_cap_factor must be positive, got {depth.planning_cap_factor}")
    return depth


def _one_of(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# A year of 5-minute intervals: the most history one snapshot may hold (window or reach).
MAX_HISTORY_INTERVALS = 288 * 366


def _market_data(table: dict[str, Any]) -> MarketDataSettings:
    live_poll_s = float(table["live_poll_s"])
    if not live_poll_s > 0:
        raise ValueError(f"market_data.live_poll_s must be > 0 seconds, got {live_poll_s}")
    reach = table.get("history_reach_intervals", 0)
    if isinstance(reach, bool) or not isinstance(reach, int) or not 0 <= reach <= MAX_HISTORY_INTERVALS:
        raise ValueError("market_data.history_reach_intervals must be a whole number of 5-minute intervals in "
                         f"0..{MAX_HISTORY_INTERVALS} (0: no reach), got {reach!r}")
    return MarketDataSettings(
        data_dir=_resolve(table["data_dir"]),
        dispatch_price_delay_s=float(table["dispatch_price_delay_s"]),
        missing_intervals=tuple(datetime.fromisoformat(t) for t in table["missing_intervals"]),
        source=_one_of(str(table["source"]), MARKET_DATA_SOURCES, "market_data.source"),
        live_poll_s=live_poll_s,
        live_folders=tuple(str(folder) for folder in table["live_folders"]),
        live_attempts=int(table["live_attempts"]),
        live_timeout_s=float(table["live_timeout_s"]),
        live_retry_max_s=float(table["live_retry_max_s"]),
        history_reach_intervals=reach,
    )


def _build(raw: dict[str, Any], database_url: str | None) -> Settings:
    m = raw["market"]
    market = MarketRules(
        interval_minutes=int(m["interval_minutes"]),
        intervals_per_trading_day=int(m["intervals_per_trading_day"]),
        trading_day_start=_parse_hhmm(m["trading_day_start"]),
        market_timezone_offset_hours=int(m["market_timezone_offset_hours"]),
        band_count=int(m["band_count"]),
        market_price_floor=float(m["market_price_floor"]),
        fcas_price_floor=float(m["fcas_price_floor"]),
        daily_bid_close=_parse_hhmm(m["daily_bid_close"]),
        rebid_explanation_max_chars=int(m["rebid_explanation_max_chars"]),
        administered_price_floor=float(m["administered_price_floor"]),
        administered_price_cap=float(m["administered_price_cap"]),
        administered_lookback_intervals=int(m["administered_lookback_intervals"]),
        price_caps=tuple(PriceCap(int(c["fy_start"]), float(c["cap"]), float(c["cumulative_price_threshold"]),
                                  int(c.get("threshold_interval_minutes", 5)),
                                  float(c["market_price_floor"]) if "market_price_floor" in c else None)
                         for c in m["price_caps"]),
    )
    b = raw["bidding"]
    if int(b.get("daily_bid_lead_minutes", 60)) < 0:
        raise ValueError(f"bidding.daily_bid_lead_minutes must be >= 0 (0: no DAILY bids), "
                         f"got {b['daily_bid_lead_minutes']}")
    bidding = _bidding(raw["bidding"])
    _one_of(bidding.fcas_offer, _BIDDING_STRATEGIES["fcas_offer"], "bidding.fcas_offer")
    _one_of(bidding.charge_headroom, _BIDDING_STRATEGIES["charge_headroom"], "bidding.charge_headroom")
    _one_of(str(raw["cycle"].get("clock", "replay")), CYCLE_CLOCKS, "cycle.clock")
    cycle = _cycle(raw["cycle"])
    battery = _battery(raw["battery"])
    coopt = _coopt(raw.get("coopt", {}))
    units = _units(raw, battery, bidding, cycle, coopt, market.band_count)
    first = next(unit for unit in units if unit.kind == BATTERY_UNIT)
    battery, bidding, cycle = first.battery, first.bidding, first.cycle
    vpp_unit = next(unit for unit in units if unit.kind == VPP_UNIT)
    coopt = replace(coopt, fleet_unit_id=vpp_unit.unit_id)
    md = raw["market_data"]
    s = raw["stack"]
    a = raw["archive"]
    return Settings(
        market=market,
        battery=battery,
        bidding=bidding,
        cycle=cycle,
        market_data=_market_data(md),
        stack=StackSettings(**{**s, "state_dir": _resolve(s["state_dir"])}),
        fleet=_fleet(raw.get("fleet", {})),
        coopt=coopt,
        units=units,
        market_store=_market_store(raw.get("market_store", {})),
        pools=_pools(raw.get("pools", {})),
        bid_service=_bid_service(raw.get("bid_service", {})),
        market_depth=_market_depth(raw.get("market_depth", {})),
        archive=ArchiveSettings(**a),
        database_url=database_url,
    )


def _bidding(b: dict[str, Any]) -> BiddingSettings:
    return BiddingSettings(
        gen_band_prices=tuple(float(x) for x in b["gen_band_prices"]),
        load_band_prices=tuple(float(x) for x in b["load_band_prices"]),
        fcas_band_prices=tuple(float(x) for x in b["fcas_band_prices"]),
        bid_horizon_intervals=int(b["bid_horizon_intervals"]),
        rebid_materiality_mw=float(b["rebid_materiality_mw"]),
        headroom_front_share=float(b.get("headroom_front_share", 0.0)),
        headroom_pricing=str(b.get("headroom_pricing", "fixed")),
        fcas_displacement_gen_floor=float(b.get("fcas_displacement_gen_floor", 1000.0)),
        fcas_displacement_load_ceiling=float(b.get("fcas_displacement_load_ceiling", -100.0)),
        fcas_displacement_scope=str(b.get("fcas_displacement_scope", "all")),
        planned_pricing=str(b.get("planned_pricing", "price_taking")),
        energy_value_floor_per_mwh=float(b.get("energy_value_floor_per_mwh", -1000.0)),
        daily_bid_lead_minutes=int(b.get("daily_bid_lead_minutes", 60)),
        fcas_offer=str(b.get("fcas_offer", "planned")),
        charge_headroom=str(b.get("charge_headroom", "negative")),
    )


def _cycle(c: dict[str, Any]) -> CycleSettings:
    kappa = c.get("optimiser_uncertainty_weight")
    if kappa is not None and not (isinstance(kappa, int | float) and 0 <= kappa < 1):
        raise ConfigError(f"[cycle] optimiser_uncertainty_weight must be a number in [0, 1), got {kappa!r}")
    return CycleSettings(
        **{k: v for k, v in c.items() if k not in {"forecast_quantiles", "replay_start"}},
        forecast_quantiles=tuple(float(q) for q in c["forecast_quantiles"]),
        replay_start=datetime.fromisoformat(c["replay_start"]),
    )


def _vpp_unit(unit_id: str, region: str, battery: BatterySettings, bidding: BiddingSettings,
              cycle: CycleSettings) -> UnitSettings:
    """The VPP's fleet unit when no ``[[units]]`` entry names it: ``[bidding]``'s ladders; the battery fields are
    carried but unused (the fleet unit's MW and MWh come from the asset graph's sites)."""
    return UnitSettings(unit_id, region, VPP_UNIT, replace(battery, unit_id=unit_id, region=region), bidding,
                        replace(cycle, unit_id=unit_id, region=region))


# Keys of a [[units]] entry besides the battery's fields and the [units.bidding] / [units.cycle] tables.
_UNIT_KEYS = {"unit_id", "region", "kind", "bidding", "cycle"}
_BATTERY_FIELDS = {f.name for f in fields(BatterySettings)} - {"unit_id", "region"}
_BIDDING_STRATEGIES = {"headroom_pricing": ("fixed", "opportunity_cost"),
                       "planned_pricing": ("price_taking", "energy_value"),
                       "fcas_displacement_scope": ("all", "regulation"),
                       "fcas_offer": ("planned", "headroom"),
                       "charge_headroom": ("negative", "energy_value")}
# Cycle keys a unit may set for itself: the timing, clock and replay period are the stack's, shared by all.
# The algorithm keys choose the unit's strategy (a registered forecaster and optimiser, name and version).
UNIT_ALGORITHM_KEYS = frozenset({"forecast_algorithm", "forecast_algorithm_version", "optimiser_algorithm",
                                 "optimiser_algorithm_version"})
UNIT_CYCLE_KEYS = frozenset({"horizon_intervals", "history_intervals", "forecast_quantiles",
                             "optimiser_price_quantile", "optimiser_price_tail_weight", "degradation_cost_per_mwh",
                             "terminal_value_per_mwh", "optimiser_time_limit_s"}) | UNIT_ALGORITHM_KEYS


def _units(raw: dict[str, Any], battery: BatterySettings, bidding: BiddingSettings, cycle: CycleSettings,
           coopt: CooptSettings, band_count: int) -> tuple[UnitSettings, ...]:
    """The portfolio: each ``[[units]]`` entry over the defaults of ``[battery]``, ``[bidding]`` and ``[cycle]``
    (an entry's battery fields, ``[units.bidding]`` and ``[units.cycle]`` override them); without ``[[units]]``
    the single unit of ``[battery]`` / ``[cycle]``. The VPP fleet unit (``kind = "vpp"``) is always one of them:
    an entry of that kind names it, else it is ``[coopt] fleet_unit_id`` in ``[cycle]``'s region. Raises
    :class:`ConfigError` naming the unit and the field of the first bad entry."""
    entries = raw.get("units")
    if entries is None:
        entries = [{"unit_id": cycle.unit_id, "region": cycle.region}]
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError("[[units]] must be an array of tables")
    units: list[UnitSettings] = []
    for index, entry in enumerate(entries):
        units.append(_unit(index, entry, battery, bidding, cycle, band_count))
    if not any(unit.kind == VPP_UNIT for unit in units):
        units.append(_vpp_unit(coopt.fleet_unit_id, cycle.region, battery, bidding, cycle))
    seen: dict[str, int] = {}
    for index, unit in enumerate(units):
        if unit.unit_id in seen:
            raise ConfigError(f"units[{index}] (unit {unit.unit_id!r}) field unit_id: duplicate unit id, already "
                              f"used by units[{seen[unit.unit_id]}]"
                              + (" (the VPP fleet unit, [coopt] fleet_unit_id)" if unit.kind == VPP_UNIT else ""))
        seen[unit.unit_id] = index
    if sum(unit.kind == VPP_UNIT for unit in units) > 1:
        second = [unit for unit in units if unit.kind == VPP_UNIT][1]
        raise ConfigError(f"unit {second.unit_id!r} field kind: only one unit may be the VPP fleet unit (kind = "
                          f"\"vpp\"), the price-forecast distribution bids one")
    if not any(unit.kind == BATTERY_UNIT for unit in units):
        raise ConfigError("[[units]] configures no battery unit (kind = \"battery\"): at least one is needed")
    return tuple(units)


def _unit(index: int, entry: dict[str, Any], battery: BatterySettings, bidding: BiddingSettings,
          cycle: CycleSettings, band_count: int) -> UnitSettings:
    unit_id = entry.get("unit_id")
    label = f"units[{index}]" + (f" (unit {unit_id!r})" if isinstance(unit_id, str) and unit_id else "")

    def bad(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{label} field {field_name}: {why}")

    if not isinstance(unit_id, str) or not unit_id.strip() or unit_id != unit_id.strip() or "/" in unit_id:
        raise bad("unit_id", f"a unit needs a non-empty id without spaces at its ends or '/', got {unit_id!r}")
    for key in entry:
        if key not in _UNIT_KEYS and key not in _BATTERY_FIELDS:
            raise bad(key, f"unknown field (a unit takes {', '.join(sorted(_UNIT_KEYS | _BATTERY_FIELDS))})")
    region = entry.get("region", cycle.region)
    if region not in NEM_REGIONS:
        raise bad("region", f"unknown region {region!r} (the NEM's regions are {', '.join(NEM_REGIONS)})")
    kind = entry.get("kind", BATTERY_UNIT)
    if kind not in UNIT_KINDS:
        raise bad("kind", f"must be one of {', '.join(UNIT_KINDS)}, got {kind!r}")
    battery_values: dict[str, Any] = {}
    for key in _BATTERY_FIELDS & entry.keys():
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(key, f"must be a number, got {value!r}")
        battery_values[key] = float(value)
    unit_battery = replace(battery, unit_id=unit_id, region=region, **battery_values)
    for problem_field, problem in _battery_problems(unit_battery):
        raise bad(problem_field, problem)
    unit_bidding = _unit_bidding(entry.get("bidding", {}), bidding, band_count, bad)
    unit_cycle = _unit_cycle(entry.get("cycle", {}), cycle, bad)
    return UnitSettings(unit_id, region, kind, unit_battery, unit_bidding,
                        replace(unit_cycle, unit_id=unit_id, region=region))


def _battery_problems(battery: BatterySettings) -> list[tuple[str, str]]:
    """(field, why) of every parameter of ``battery`` that cannot describe a battery."""
    problems: list[tuple[str, str]] = []
    for name in ("power_mw", "energy_mwh", "ramp_rate_mw_per_min", "mlf_gen", "mlf_load"):
        if not getattr(battery, name) > 0:
            problems.append((name, f"must be > 0, got {getattr(battery, name)}"))
    for name in ("charge_efficiency", "discharge_efficiency"):
        if not 0 < getattr(battery, name) <= 1:
            problems.append((name, f"must be in (0, 1], got {getattr(battery, name)}"))
    for name in ("soc_min_fraction", "soc_max_fraction", "initial_soc_fraction"):
        if not 0 <= getattr(battery, name) <= 1:
            problems.append((name, f"must be in [0, 1], got {getattr(battery, name)}"))
    if battery.soc_min_fraction >= battery.soc_max_fraction:
        problems.append(("soc_max_fraction", f"must be above soc_min_fraction ({battery.soc_min_fraction}), got "
                                             f"{battery.soc_max_fraction}"))
    if not battery.soc_min_fraction <= battery.initial_soc_fraction <= battery.soc_max_fraction:
        problems.append(("initial_soc_fraction", f"must lie within [soc_min_fraction, soc_max_fraction] = "
                                                 f"[{battery.soc_min_fraction}, {battery.soc_max_fraction}], got "
                                                 f"{battery.initial_soc_fraction}"))
    if not 0 <= battery.min_ramp_rate_mw_per_min <= battery.ramp_rate_mw_per_min:
        problems.append(("min_ramp_rate_mw_per_min", f"must be in [0, ramp_rate_mw_per_min], got "
                                                     f"{battery.min_ramp_rate_mw_per_min}"))
    return problems


def _unit_bidding(table: Any, bidding: BiddingSettings, band_count: int,
                  bad: Callable[[str, str], ConfigError]) -> BiddingSettings:
    if not isinstance(table, dict):
        raise bad("bidding", "must be a table ([units.bidding])")
    known = {f.name for f in fields(BiddingSettings)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise bad(f"bidding.{key}", f"unknown field (the bidding fields are {', '.join(sorted(known))})")
        if key.endswith("_band_prices"):
            if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      for x in value):
                raise bad(f"bidding.{key}", f"must be a list of {band_count} prices, got {value!r}")
            ladder = tuple(float(x) for x in value)
            if len(ladder) != band_count:
                raise bad(f"bidding.{key}", f"must have {band_count} bands, got {len(ladder)}")
            if any(b <= a for a, b in pairwise(ladder)):
                raise bad(f"bidding.{key}", f"band prices must increase strictly, got {list(ladder)}")
            values[key] = ladder
        elif key in _BIDDING_STRATEGIES:
            if value not in _BIDDING_STRATEGIES[key]:
                raise bad(f"bidding.{key}", f"must be one of {', '.join(_BIDDING_STRATEGIES[key])}, got {value!r}")
            values[key] = str(value)
        elif key == "bid_horizon_intervals":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f"bidding.{key}", f"must be a whole number of intervals >= 1, got {value!r}")
            values[key] = value
        elif key == "daily_bid_lead_minutes":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(f"bidding.{key}", f"must be a whole number of minutes >= 0 (0: no DAILY bids), "
                                            f"got {value!r}")
            values[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"bidding.{key}", f"must be a number, got {value!r}")
            values[key] = float(value)
    merged = replace(bidding, **values)
    if merged.rebid_materiality_mw < 0:
        raise bad("bidding.rebid_materiality_mw", f"must be >= 0 MW, got {merged.rebid_materiality_mw}")
    if not 0 <= merged.headroom_front_share <= 1:
        raise bad("bidding.headroom_front_share", f"must be in [0, 1], got {merged.headroom_front_share}")
    return merged


def _unit_cycle(table: Any, cycle: CycleSettings, bad: Callable[[str, str], ConfigError]) -> CycleSettings:
    if not isinstance(table, dict):
        raise bad("cycle", "must be a table ([units.cycle])")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in UNIT_CYCLE_KEYS:
            raise bad(f"cycle.{key}", f"not a per-unit setting (a unit may set {', '.join(sorted(UNIT_CYCLE_KEYS))}; "
                                      "the timing and clock are [cycle]'s, shared by every unit)")
        if key == "forecast_quantiles":
            if not isinstance(value, list) or not value or not all(
                    isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q < 1 for q in value):
                raise bad("cycle.forecast_quantiles", f"must be a list of quantiles in (0, 1), got {value!r}")
            values[key] = tuple(float(q) for q in value)
        elif key in {"horizon_intervals", "history_intervals"}:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(f"cycle.{key}", f"must be a whole number of intervals >= 1, got {value!r}")
            values[key] = value
        elif key in UNIT_ALGORITHM_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise bad(f"cycle.{key}",
                          f"must be a non-empty string (a version in quotes, e.g. \"7\"), got {value!r}")
            values[key] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"cycle.{key}", f"must be a number, got {value!r}")
            values[key] = float(value)
    return replace(cycle, **values)
