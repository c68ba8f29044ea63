"""The dispatch LP of :mod:`algorithms.market.optimise` as arrays: one sparse matrix handed to HiGHS directly.

:func:`build_dispatch_lp` assembles, with vectorised NumPy (no per-variable Python object), exactly the
linear programme the module docstring of :mod:`algorithms.market.optimise` describes; :func:`solve_matrix_lp`
passes it to ``highspy.Highs`` in one call (highspy's pointer ``passModel``, the arrays read in place) and
reads the primal values and row duals back as arrays.

This is the ONE formulation of the dispatch problem: every constraint is written here, once. HiGHS
solves it through highspy (:func:`solve_matrix_lp`); :mod:`algorithms.market.lp_pulp` loads the same
matrix generically into PuLP (HiGHS through PuLP, or CBC) as a second backend.

Columns, in this order, each a block of ``T`` (one per period: a dispatch interval, unless
:attr:`DispatchSpec.period_intervals` makes a period several intervals at one constant output): ``gen`` (MW),
``load`` (MW), ``soc`` (MWh at the END of the period), then one enablement block (MW) per FCAS product in the order
of the prices, then — only when :attr:`DispatchSpec.exclusive_intervals` names intervals — one binary
``u_k`` per such interval (1 = may discharge, 0 = may charge). Rows, in this order:

* ``T`` SoC balance equalities ``soc_t - soc_{t-1} - eta_c h_t load_t + h_t / eta_d gen_t = [soc_{-1} if t = 0]``
  (``h_t`` the period's hours);
* the terminal row ``soc_{T-1} >= terminal``;
* ``T`` joint-capacity rows per :class:`JointCapacityGroup` (``sign (gen_t - load_t) + sum e_{s,t} <= P``);
* the ramp rows, only when they can bind (:meth:`DispatchSpec.ramp_rows`), each one ranged row
  ``-R <= p_t - p_{t-1} <= R`` (``R`` = ramp MW per interval);
* ``T`` energy-reserve rows ``sum_s e_{s,t} hours_s / eta_d - soc_{t-1} <= -SoC_min`` when a raise
  product carries a reserve;
* per exclusive interval ``t`` (binary ``u``) two rows ``gen_t - P u <= 0`` and ``load_t + P u <= P``:
  the unit charges or discharges, never both (the market dispatches one net target). The joint-capacity
  and ramp rows are written on the net output ``gen - load`` and the energy-reserve rows on the SoC, so
  they hold unchanged for the physical plan; the binaries only remove plans that charge and discharge
  at once.

HiGHS minimises the negated revenue (as the PuLP build does), so its row duals are flipped back here:
:attr:`LpSolution.row_duals` is the change of the maximised objective ($) per unit of right-hand side.

A two-stage plan on price scenarios (:func:`build_scenario_lp`) is the same formulation copied once per scenario,
block-diagonally (columns and rows of the first scenario first, then each further copy's), each copy's objective
weighted by its probability, plus one non-anticipativity row per first-interval column (``gen_0``, ``load_0`` and
every FCAS enablement) and further copy: ``x_copy - x_first = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from algorithms.common.battery import BatteryParams

highspy: Any
try:
    import highspy
except ImportError:  # pragma: no cover - exercised only where highspy is not installed
    highspy = None

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]
LpStatus = Literal["OPTIMAL", "INFEASIBLE", "TIME_LIMIT", "ERROR"]

SOLVER_NAME = "HiGHS"
# Rolling horizons: dual simplex on the model as built. HiGHS's presolve removes almost nothing here
# (the terminal row) and costs a quarter of the solve; equilibration scaling (strategy 1) needs fewer
# iterations than the default on these rows (288 intervals x 8 FCAS: 12 ms instead of 20 ms).
SIMPLEX_OPTIONS: Mapping[str, Any] = {"solver": "simplex", "presolve": "off", "simplex_scale_strategy": 1}
# Long (benchmark) horizons: interior point with crossover, HiGHS's presolve and scaling, so the basic
# solution still carries row duals.
INTERIOR_POINT_OPTIONS: Mapping[str, Any] = {"solver": "ipm", "run_crossover": "on"}
# A MILP (binaries on exclusive intervals) stops within this relative gap of its proven bound (HiGHS default);
# the rolling plan's. The perfect-foresight benchmark passes its own (optimise.PERFECT_FORESIGHT_MIP_REL_GAP).
MIP_REL_GAP = 1e-4
# HiGHS treats any bound at or beyond 1e20 as infinite; np.inf is passed through unchanged.
_INF = math.inf


@dataclass(frozen=True)
class JointCapacityGroup:
    """FCAS products that share the headroom on one side of a joint-capacity row.

    ``sign`` is +1 for raise (``p_t + sum e <= P``) and -1 for lower (``-p_t + sum e <= P``).
    """

    name: str
    sign: float
    members: tuple[str, ...]


@dataclass(frozen=True)
class DispatchSpec:
    """Validated inputs of one dispatch LP (the arguments of ``solve_dispatch`` after checking).

    ``energy_price`` is $/MWh per interval, every ``fcas_price`` series $/MW/h (insertion order = column
    order); ``fcas_cap_mw`` holds the upper bound (MW) of every FCAS product, ``reserve_hours`` the
    hours of energy each raise product must be able to deliver (only products with hours > 0).
    ``enablement_cap_mw`` (market depth) holds, for some FCAS products, an upper bound on enablement per
    interval of the horizon (MW, one value per interval, ``inf`` = no cap); the column bound is the
    smaller of it and ``fcas_cap_mw``. ``exclusive_intervals`` (ascending interval indices) are the
    intervals where a binary forbids charging and discharging at once (empty: a pure LP).
    ``charge_energy_price`` ($/MWh per interval), when given, is the price charging (``load``) is valued at,
    ``energy_price`` then valuing discharge (``gen``) only; None (default): both at ``energy_price``.
    ``soc_max_mwh_by_interval`` (MWh per interval, the SoC at the END of each interval), when given, is the
    upper bound of each ``soc_t`` instead of the battery's maximum; None (default): the battery's maximum.
    ``period_intervals`` (one positive count per LP period), when given, makes each LP period stand for that
    many consecutive dispatch intervals of ``interval_hours`` each, dispatched at one constant output
    (:mod:`algorithms.market.horizon_periods`): every per-period array above then has one value per period,
    ``soc_t`` is the SoC at the end of period ``t``, and each period's energy and FCAS are its hours times its
    MW. None (default): every period is one dispatch interval.
    """

    energy_price: FloatArray
    fcas_price: Mapping[str, FloatArray]
    battery: BatteryParams
    initial_soc_mwh: float
    terminal_soc_mwh: float
    interval_hours: float
    degradation_cost_per_mwh: float
    initial_net_mw: float | None
    terminal_value_per_mwh: float
    fcas_cap_mw: Mapping[str, float]
    reserve_hours: Mapping[str, float]
    joint_groups: tuple[JointCapacityGroup, ...]
    enablement_cap_mw: Mapping[str, FloatArray] = field(default_factory=dict)
    exclusive_intervals: tuple[int, ...] = ()
    charge_energy_price: FloatArray | None = None
    soc_max_mwh_by_interval: FloatArray | None = None
    period_intervals: IntArray | None = None

    @property
    def horizon(self) -> int:
        """Number of LP periods ``T`` (dispatch intervals unless ``period_intervals`` groups them)."""
        return len(self.energy_price)

    @property
    def period_hours(self) -> FloatArray:
        """Length of every LP period (hours): ``interval_hours`` times its ``period_intervals``."""
        if self.period_intervals is None:
            return np.full(self.horizon, self.interval_hours, dtype=np.float64)
        return self.interval_hours * np.asarray(self.period_intervals, dtype=np.float64)

    @property
    def fcas_products(self) -> tuple[str, ...]:
        """FCAS products in column order."""
        return tuple(self.fcas_price)

    @property
    def gen_revenue_per_mw(self) -> FloatArray:
        """Objective coefficient of ``gen_t`` ($ per MW over the period): h (RRP mlf_gen - degradation)."""
        h = self.period_hours
        return h * (self.energy_price * self.battery.mlf_gen - self.degradation_cost_per_mwh)

    @property
    def load_revenue_per_mw(self) -> FloatArray:
        """Objective coefficient of ``load_t`` ($ per MW over the period): -h (RRP mlf_load + degradation),
        RRP being ``charge_energy_price`` when given."""
        h = self.period_hours
        price = self.energy_price if self.charge_energy_price is None else self.charge_energy_price
        return h * (-price * self.battery.mlf_load - self.degradation_cost_per_mwh)

    @property
    def ramp_mw(self) -> float:
        """Largest change of net output between consecutive intervals (MW): ramp rate x interval minutes."""
        return self.battery.ramp_rate_mw_per_min * self.interval_hours * 60

    def fcas_upper_mw(self, product: str) -> FloatArray:
        """Upper bound of the enablement of ``product`` per interval (MW): ``fcas_cap_mw`` capped by the
        market-depth ``enablement_cap_mw`` of that product, when given."""
        upper = np.full(self.horizon, self.fcas_cap_mw[product], dtype=np.float64)
        depth = self.enablement_cap_mw.get(product)
        if depth is not None:
            np.minimum(upper, depth, out=upper)
        return upper

    def ramp_rows(self) -> tuple[bool, bool]:
        """(ramp row from ``initial_net_mw`` into the first interval, ramp rows within the horizon) needed.

        A row is built only when it can bind: within the horizon when ``R < 2 P``, at the start when
        ``|initial_net_mw| + P > R``.
        """
        ramp = self.ramp_mw
        power = self.battery.power_mw
        at_start = self.initial_net_mw is not None and abs(self.initial_net_mw) + power > ramp
        return at_start, ramp < 2 * power


@dataclass(frozen=True)
class ColumnLayout:
    """Where each variable block sits among the LP columns (``T`` columns per block)."""

    horizon: int
    fcas_products: tuple[str, ...]
    exclusive_intervals: tuple[int, ...] = ()

    @property
    def gen(self) -> slice:
        """Columns of ``gen_t`` (MW)."""
        return slice(0, self.horizon)

    @property
    def load(self) -> slice:
        """Columns of ``load_t`` (MW)."""
        return slice(self.horizon, 2 * self.horizon)

    @property
    def soc(self) -> slice:
        """Columns of ``soc_t`` (MWh at the end of interval t)."""
        return slice(2 * self.horizon, 3 * self.horizon)

    def fcas(self, product: str) -> slice:
        """Columns of the enablement of ``product`` (MW)."""
        start = (3 + self.fcas_products.index(product)) * self.horizon
        return slice(start, start + self.horizon)

    @property
    def direction(self) -> slice:
        """Columns of the binaries ``u_k`` (1 = discharge allowed), one per exclusive interval."""
        start = (3 + len(self.fcas_products)) * self.horizon
        return slice(start, start + len(self.exclusive_intervals))

    @property
    def num_columns(self) -> int:
        """Total number of columns."""
        return (3 + len(self.fcas_products)) * self.horizon + len(self.exclusive_intervals)


@dataclass(frozen=True, eq=False)
class CscMatrix:
    """A sparse matrix in compressed sparse column form (``indptr`` has one entry per column plus one)."""

    num_rows: int
    num_columns: int
    indptr: Int32Array
    indices: Int32Array
    data: FloatArray

    @property
    def nnz(self) -> int:
        """Number of stored (nonzero) coefficients."""
        return len(self.data)

    def column_of_entries(self) -> Int32Array:
        """The column of every stored coefficient."""
        return np.repeat(np.arange(self.num_columns, dtype=np.int32), np.diff(self.indptr))

    def multiply(self, x: FloatArray) -> FloatArray:
        """The row activities ``A x`` (one value per row)."""
        weights = self.data * np.asarray(x, dtype=np.float64)[self.column_of_entries()]
        return np.bincount(self.indices, weights=weights, minlength=self.num_rows).astype(np.float64)

    def to_dense(self) -> FloatArray:
        """The matrix as a dense rows x columns array (for tests and small problems)."""
        dense = np.zeros((self.num_rows, self.num_columns))
        dense[self.indices, self.column_of_entries()] = self.data
        return dense


def csc_from_triplets(rows: IntArray, cols: IntArray, values: FloatArray, num_rows: int,
                      num_columns: int) -> CscMatrix:
    """CSC of (row, column, value) triplets with distinct positions; within a column, rows ascend."""
    order = np.lexsort((rows, cols))
    counts = np.bincount(cols, minlength=num_columns)
    indptr = np.zeros(num_columns + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    return CscMatrix(
        num_rows=num_rows, num_columns=num_columns, indptr=indptr,
        indices=rows[order].astype(np.int32), data=values[order].astype(np.float64),
    )


@dataclass(frozen=True, eq=False)
class MatrixLp:
    """``max cost . x`` s.t. ``row_lower <= matrix x <= row_upper``, ``col_lower <= x <= col_upper``.

    ``matrix`` is CSC (rows x columns); infinite bounds are ``inf``. ``balance_rows`` are the SoC balance
    rows, one per interval, whose duals are the value of stored energy ($/MWh).
    """

    cost: FloatArray
    col_lower: FloatArray
    col_upper: FloatArray
    matrix: CscMatrix
    row_lower: FloatArray
    row_upper: FloatArray
    layout: ColumnLayout
    balance_rows: slice
    raise_capacity_rows: tuple[slice, ...] = ()
    lower_capacity_rows: tuple[slice, ...] = ()
    scenario_blocks: tuple[ScenarioBlock, ...] = ()

    def integer_columns(self) -> BoolArray:
        """True for every integer (binary) column: the direction binaries."""
        integer = np.zeros(len(self.cost), dtype=np.bool_)
        integer[self.layout.direction] = True
        return integer

    def energy_values(self, row_duals: FloatArray) -> FloatArray:
        """The value of stored energy per interval ($/MWh) from the row duals: the SoC balance rows' duals,
        summed over the price scenarios of a scenario LP (:func:`build_scenario_lp`, whose objective is
        already weighted by each scenario's probability, so the sum is the expected value)."""
        values: FloatArray = row_duals[self.balance_rows]
        for block in self.scenario_blocks:
            values = values + row_duals[_shifted(self.balance_rows, block.row_offset)]
        return values

    def capacity_values(self, row_duals: FloatArray, period_hours: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Raise and lower capacity values per period ($/MW/h) from the row duals ($ per MW): the sum
        of the duals of every joint-capacity row on that side (of every price scenario of a scenario LP),
        divided by the period's length (hours, one value per period)."""
        horizon = self.layout.horizon
        offsets = (0, *(block.row_offset for block in self.scenario_blocks))
        values = []
        for blocks in (self.raise_capacity_rows, self.lower_capacity_rows):
            total = np.zeros(horizon)
            for offset in offsets:
                for rows in blocks:
                    total += row_duals[_shifted(rows, offset)]
            values.append(total / period_hours)
        return values[0], values[1]


@dataclass(frozen=True)
class ScenarioBlock:
    """Where one further price scenario's copy of the dispatch LP sits in a scenario LP: its first column and
    first row (the copy has the layout and rows of the first scenario's LP without direction binaries)."""

    column_offset: int
    row_offset: int


def _shifted(rows: slice, offset: int) -> slice:
    return rows if offset == 0 else slice(rows.start + offset, rows.stop + offset)


@dataclass(frozen=True, eq=False)
class LpSolution:
    """What the solver returned: a status, a reason, and (when OPTIMAL) primal values and row duals.

    ``row_duals`` refer to the maximisation ($ per unit of right-hand side), empty for a MILP. Arrays
    are empty unless the status is OPTIMAL, or TIME_LIMIT for a MILP that found a feasible plan.
    ``objective_bound`` ($, maximised cost incl. any terminal value) is the proven upper bound of a MILP
    (NaN when unknown) and ``mip_gap`` its relative gap to the plan (0 for an LP).
    """

    status: LpStatus
    reason: str
    column_values: FloatArray
    row_duals: FloatArray
    objective_bound: float = math.nan
    mip_gap: float = 0.0


class _RowBlocks:
    """Accumulates row blocks as COO triplets plus bounds, in the order they are added."""

    def __init__(self) -> None:
        self.rows: list[IntArray] = []
        self.cols: list[IntArray] = []
        self.values: list[FloatArray] = []
        self.lower: list[FloatArray] = []
        self.upper: list[FloatArray] = []
        self.count = 0

    def add(self, entries: list[tuple[IntArray, IntArray, FloatArray]], lower: FloatArray,
            upper: FloatArray) -> slice:
        """Append ``len(lower)`` rows; ``entries`` are (row offset within the block, column, value)."""
        first = self.count
        for rows, cols, values in entries:
            self.rows.append(rows + first)
            self.cols.append(cols)
            self.values.append(values)
        self.lower.append(lower)
        self.upper.append(upper)
        self.count += len(lower)
        return slice(first, self.count)


def _full(size: int, value: float) -> FloatArray:
    return np.full(size, value, dtype=np.float64)


def _columns_and_objective(spec: DispatchSpec, layout: ColumnLayout) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(cost $, lower, upper) per column: MW for gen/load/FCAS, MWh for soc."""
    horizon = spec.horizon
    battery = spec.battery
    blocks = [spec.gen_revenue_per_mw, spec.load_revenue_per_mw, np.zeros(horizon)]
    hours = spec.period_hours
    blocks += [hours * spec.fcas_price[p] for p in layout.fcas_products]
    exclusive = len(layout.exclusive_intervals)
    cost = np.concatenate([*blocks, np.zeros(exclusive)])
    if spec.terminal_value_per_mwh > 0:
        cost[layout.soc.stop - 1] += spec.terminal_value_per_mwh
    lower = np.concatenate(
        [np.zeros(2 * horizon), _full(horizon, battery.soc_min_mwh),
         np.zeros(len(layout.fcas_products) * horizon + exclusive)]
    )
    upper = np.concatenate(
        [_full(2 * horizon, battery.power_mw),
         _full(horizon, battery.soc_max_mwh) if spec.soc_max_mwh_by_interval is None else spec.soc_max_mwh_by_interval]
        + [spec.fcas_upper_mw(p) for p in layout.fcas_products] + [np.ones(exclusive)]
    )
    return cost, lower, upper


def _add_balance(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout) -> slice:
    """soc_t - soc_{t-1} - eta_c h_t load_t + h_t / eta_d gen_t = 0, soc_{-1} moved to the right (MWh; h_t the
    period's hours)."""
    horizon = spec.horizon
    t = np.arange(horizon)
    later = t[1:]
    h = spec.period_hours
    rhs = np.zeros(horizon)
    rhs[0] = spec.initial_soc_mwh
    return blocks.add(
        [
            (t, layout.soc.start + t, _full(horizon, 1.0)),
            (t, layout.load.start + t, -spec.battery.charge_efficiency * h),
            (t, layout.gen.start + t, h / spec.battery.discharge_efficiency),
            (later, layout.soc.start + later - 1, _full(horizon - 1, -1.0)),
        ],
        rhs, rhs.copy(),
    )


def _add_terminal(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout) -> None:
    """soc_{T-1} >= terminal (MWh)."""
    zero = np.zeros(1, dtype=np.int64)
    blocks.add(
        [(zero, np.array([layout.soc.stop - 1]), np.ones(1))],
        np.array([spec.terminal_soc_mwh]), np.array([_INF]),
    )


def _add_joint_capacity(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout,
                        ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """sign (gen_t - load_t) + sum_members e_{s,t} <= P per group and interval (MW); returns the raise and
    the lower groups' row blocks."""
    horizon = spec.horizon
    t = np.arange(horizon)
    raise_rows: list[slice] = []
    lower_rows: list[slice] = []
    for group in spec.joint_groups:
        entries = [
            (t, layout.gen.start + t, _full(horizon, group.sign)),
            (t, layout.load.start + t, _full(horizon, -group.sign)),
        ]
        entries += [(t, layout.fcas(m).start + t, _full(horizon, 1.0)) for m in group.members]
        rows = blocks.add(entries, _full(horizon, -_INF), _full(horizon, spec.battery.power_mw))
        (raise_rows if group.sign > 0 else lower_rows).append(rows)
    return tuple(raise_rows), tuple(lower_rows)


def _add_ramp(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout) -> None:
    """|p_t - p_{t-1}| <= R as ranged rows (MW), only those that can bind."""
    at_start, within = spec.ramp_rows()
    ramp = spec.ramp_mw
    if at_start and spec.initial_net_mw is not None:
        zero = np.zeros(1, dtype=np.int64)
        blocks.add(
            [(zero, np.array([layout.gen.start]), np.ones(1)), (zero, np.array([layout.load.start]), -np.ones(1))],
            np.array([spec.initial_net_mw - ramp]), np.array([spec.initial_net_mw + ramp]),
        )
    steps = spec.horizon - 1
    if not within or steps <= 0:
        return
    r = np.arange(steps)
    t = r + 1
    blocks.add(
        [
            (r, layout.gen.start + t, _full(steps, 1.0)),
            (r, layout.load.start + t, _full(steps, -1.0)),
            (r, layout.gen.start + t - 1, _full(steps, -1.0)),
            (r, layout.load.start + t - 1, _full(steps, 1.0)),
        ],
        _full(steps, -ramp), _full(steps, ramp),
    )


def _add_energy_reserve(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout) -> None:
    """sum_s e_{s,t} hours_s / eta_d - soc_{t-1} <= -SoC_min, soc_{-1} moved to the right (MWh)."""
    horizon = spec.horizon
    t = np.arange(horizon)
    later = t[1:]
    eta_d = spec.battery.discharge_efficiency
    entries = [
        (t, layout.fcas(p).start + t, _full(horizon, hours / eta_d)) for p, hours in spec.reserve_hours.items()
    ]
    entries.append((later, layout.soc.start + later - 1, _full(horizon - 1, -1.0)))
    upper = _full(horizon, -spec.battery.soc_min_mwh)
    upper[0] = spec.initial_soc_mwh - spec.battery.soc_min_mwh
    blocks.add(entries, _full(horizon, -_INF), upper)


def _add_exclusive(blocks: _RowBlocks, spec: DispatchSpec, layout: ColumnLayout) -> None:
    """gen_t - P u_k <= 0 and load_t + P u_k <= P for the k-th exclusive interval t (MW)."""
    count = len(layout.exclusive_intervals)
    if count == 0:
        return
    k = np.arange(count)
    t = np.asarray(layout.exclusive_intervals, dtype=np.int64)
    power = spec.battery.power_mw
    u = layout.direction.start + k
    blocks.add([(k, layout.gen.start + t, _full(count, 1.0)), (k, u, _full(count, -power))],
               _full(count, -_INF), np.zeros(count))
    blocks.add([(k, layout.load.start + t, _full(count, 1.0)), (k, u, _full(count, power))],
               _full(count, -_INF), _full(count, power))


def build_dispatch_lp(spec: DispatchSpec) -> MatrixLp:
    """The dispatch LP (a MILP when ``spec.exclusive_intervals`` is not empty) of ``spec`` as bounds, a
    maximised cost vector ($) and a CSC constraint matrix."""
    layout = ColumnLayout(spec.horizon, spec.fcas_products, spec.exclusive_intervals)
    cost, col_lower, col_upper = _columns_and_objective(spec, layout)
    blocks = _RowBlocks()
    balance = _add_balance(blocks, spec, layout)
    _add_terminal(blocks, spec, layout)
    raise_rows, lower_rows = _add_joint_capacity(blocks, spec, layout)
    _add_ramp(blocks, spec, layout)
    if spec.reserve_hours:
        _add_energy_reserve(blocks, spec, layout)
    _add_exclusive(blocks, spec, layout)
    matrix = csc_from_triplets(
        np.concatenate(blocks.rows), np.concatenate(blocks.cols), np.concatenate(blocks.values),
        blocks.count, layout.num_columns,
    )
    return MatrixLp(
        cost=cost, col_lower=col_lower, col_upper=col_upper, matrix=matrix,
        row_lower=np.concatenate(blocks.lower), row_upper=np.concatenate(blocks.upper),
        layout=layout, balance_rows=balance, raise_capacity_rows=raise_rows, lower_capacity_rows=lower_rows,
    )


def build_scenario_lp(scenarios: Sequence[tuple[float, DispatchSpec]]) -> MatrixLp:
    """One LP over several price scenarios that share the first interval's decision: a two-stage plan.

    ``scenarios`` are (probability, spec) pairs: the specs differ in their prices only (the first may name
    exclusive intervals; the others' are ignored) and the probabilities are positive and sum to 1. Each
    scenario gets its own copy of :func:`build_dispatch_lp`'s columns and rows, its revenue (and terminal
    value) weighted by its probability; non-anticipativity rows make the first interval's ``gen``, ``load`` and
    every FCAS enablement (MW) the same in every copy — that interval is what the bid offers now, the rest of each
    copy is what the plan would do later if that scenario's prices came. The layout, balance and capacity rows
    are the first scenario's (the plan read back is that copy), and :meth:`MatrixLp.energy_values` and
    :meth:`MatrixLp.capacity_values` sum the duals over the copies: expected values ($/MWh, $/MW/h). One
    scenario of probability 1 gives :func:`build_dispatch_lp`'s LP, array for array.
    """
    if not scenarios:
        raise ValueError("a scenario LP needs at least one scenario")
    weights = np.array([weight for weight, _ in scenarios], dtype=np.float64)
    if not (np.all(weights > 0) and abs(float(weights.sum()) - 1.0) <= 1e-9):
        raise ValueError(f"scenario probabilities must be positive and sum to 1, got {weights.tolist()}")
    first = build_dispatch_lp(scenarios[0][1])
    if len(scenarios) == 1:
        return first
    copies = [build_dispatch_lp(replace(spec, exclusive_intervals=())) for _, spec in scenarios[1:]]
    layout = first.layout
    shared = np.array([layout.gen.start, layout.load.start,
                       *(layout.fcas(product).start for product in layout.fcas_products)], dtype=np.int64)
    lps = (first, *copies)
    rows, cols, values = [], [], []
    blocks: list[ScenarioBlock] = []
    column_offset, row_offset = 0, 0
    for lp in lps:
        rows.append(lp.matrix.indices.astype(np.int64) + row_offset)
        cols.append(lp.matrix.column_of_entries().astype(np.int64) + column_offset)
        values.append(lp.matrix.data)
        if lp is not first:
            blocks.append(ScenarioBlock(column_offset=column_offset, row_offset=row_offset))
        column_offset += lp.matrix.num_columns
        row_offset += lp.matrix.num_rows
    # Non-anticipativity: copy s's first-interval column minus the first scenario's = 0, one row per column.
    linking = len(shared) * len(copies)
    link_rows = np.arange(linking, dtype=np.int64) + row_offset
    copy_columns = np.concatenate([shared + block.column_offset for block in blocks])
    rows += [link_rows, link_rows]
    cols += [copy_columns, np.tile(shared, len(copies))]
    values += [np.ones(linking), -np.ones(linking)]
    matrix = csc_from_triplets(np.concatenate(rows), np.concatenate(cols), np.concatenate(values),
                               row_offset + linking, column_offset)
    return MatrixLp(
        cost=np.concatenate([weight * lp.cost for weight, lp in zip(weights, lps, strict=True)]),
        col_lower=np.concatenate([lp.col_lower for lp in lps]),
        col_upper=np.concatenate([lp.col_upper for lp in lps]),
        matrix=matrix,
        row_lower=np.concatenate([*(lp.row_lower for lp in lps), np.zeros(linking)]),
        row_upper=np.concatenate([*(lp.row_upper for lp in lps), np.zeros(linking)]),
        layout=layout, balance_rows=first.balance_rows, raise_capacity_rows=first.raise_capacity_rows,
        lower_capacity_rows=first.lower_capacity_rows, scenario_blocks=tuple(blocks),
    )


def highspy_available() -> bool:
    """True when the highspy package (HiGHS) can be imported."""
    return highspy is not None


def _failed(status: LpStatus, reason: str) -> LpSolution:
    empty = np.zeros(0)
    return LpSolution(status=status, reason=reason, column_values=empty, row_duals=empty)


def _pass_model(solver: Any, lp: MatrixLp) -> Any:
    """Hand ``lp`` to ``solver`` (a ``highspy.Highs``): minimise the negated revenue, column-wise matrix,
    integer columns marked; returns HiGHS's status.

    The arrays go through highspy's pointer overload of ``passModel`` (contiguous float64 / int32 arrays
    read in place): the model HiGHS builds holds the same numbers as one assembled attribute by attribute in
    a ``highspy.HighsLp``, whose setters copy every array element by element (about 1.5 ms a solve at 288
    intervals x 8 FCAS products)."""
    matrix = lp.matrix
    integer = lp.integer_columns()
    integrality = np.where(integer, int(highspy.HighsVarType.kInteger),
                           int(highspy.HighsVarType.kContinuous)).astype(np.int32)
    return solver.passModel(
        int(matrix.num_columns), int(matrix.num_rows), int(matrix.nnz), int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMinimize), 0.0,
        np.ascontiguousarray(-lp.cost, dtype=np.float64), np.ascontiguousarray(lp.col_lower, dtype=np.float64),
        np.ascontiguousarray(lp.col_upper, dtype=np.float64), np.ascontiguousarray(lp.row_lower, dtype=np.float64),
        np.ascontiguousarray(lp.row_upper, dtype=np.float64), np.ascontiguousarray(matrix.indptr, dtype=np.int32),
        np.ascontiguousarray(matrix.indices, dtype=np.int32), np.ascontiguousarray(matrix.data, dtype=np.float64),
        integrality)


def _configure(solver: Any, time_limit_s: float, interior_point: bool, mip: bool,
               mip_rel_gap: float = MIP_REL_GAP) -> None:
    # One thread: HiGHS's branch and bound otherwise starts a process-wide thread pool, which a forked
    # worker process (the backtest's, the benchmarks') inherits without its threads and then waits on
    # forever; one thread also keeps the search, and so the plan, the same from run to run.
    options: dict[str, Any] = {"output_flag": False, "time_limit": float(time_limit_s), "threads": 1}
    if mip:
        options["mip_rel_gap"] = float(mip_rel_gap)
    else:
        options.update(INTERIOR_POINT_OPTIONS if interior_point else SIMPLEX_OPTIONS)
    for name, value in options.items():
        solver.setOptionValue(name, value)


def solve_matrix_lp(lp: MatrixLp, *, time_limit_s: float, interior_point: bool,
                    mip_rel_gap: float = MIP_REL_GAP) -> LpSolution:
    """Solve ``lp`` with HiGHS: dual simplex, or interior point + crossover when ``interior_point``; branch
    and bound to ``mip_rel_gap`` (relative to the proven bound; default :data:`MIP_REL_GAP`) when ``lp`` has
    integer columns.

    ``time_limit_s`` (s) bounds the HiGHS run. Statuses: OPTIMAL (values, and duals for an LP), INFEASIBLE
    (infeasible, or infeasible-or-unbounded), TIME_LIMIT (for a MILP with the best plan found, its
    proven bound and gap when it has one), ERROR (anything else, with the HiGHS status). Raises
    RuntimeError when highspy is not installed.
    """
    if highspy is None:
        raise RuntimeError("highspy is not installed")
    mip = bool(lp.integer_columns().any())
    solver = highspy.Highs()
    _configure(solver, time_limit_s, interior_point, mip, mip_rel_gap)
    passed = _pass_model(solver, lp)
    if passed == highspy.HighsStatus.kError:
        return _failed("ERROR", f"{SOLVER_NAME} rejected the model")
    run = solver.run()
    status = solver.getModelStatus()
    text = solver.modelStatusToString(status)
    optimal = status == highspy.HighsModelStatus.kOptimal and run != highspy.HighsStatus.kError
    if optimal and not mip:
        solution = solver.getSolution()
        values = np.asarray(solution.col_value, dtype=np.float64)
        return LpSolution(
            status="OPTIMAL", reason="optimal", column_values=values,
            row_duals=(-np.asarray(solution.row_dual, dtype=np.float64) if solution.dual_valid else np.zeros(0)),
            objective_bound=float(lp.cost @ values),
        )
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return _failed("INFEASIBLE", text)
    timed_out = status == highspy.HighsModelStatus.kTimeLimit
    if mip and (optimal or timed_out):
        solution = solver.getSolution()
        if not solution.value_valid:
            return _failed("TIME_LIMIT", text)
        info = solver.getInfo()
        return LpSolution(
            status="OPTIMAL" if optimal else "TIME_LIMIT", reason="optimal" if optimal else text,
            column_values=np.asarray(solution.col_value, dtype=np.float64), row_duals=np.zeros(0),
            objective_bound=-float(info.mip_dual_bound), mip_gap=float(info.mip_gap),
        )
    if timed_out:
        return _failed("TIME_LIMIT", text)
    return _failed("ERROR", f"{SOLVER_NAME} ended with status {text}")
