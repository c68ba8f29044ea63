"""Energy traded only where the forecast spread beats its uncertainty: ``lp-uncertainty-spread`` v1
(:func:`run_optimisation`, the current version) and v2 (:func:`run_optimisation_v2`, the same haircut at every
lead; served next to v1, not the default).

A rolling plan maximises revenue against one price path (the Pearson–Tukey blend of the forecast's
quantiles, :func:`algorithms.market.optimise.planning_price`). Against a noisy path that is the
optimiser's curse: the plan charges exactly where the path is erroneously low and discharges where it is
erroneously high, so the spread it realises is smaller than the spread it planned. With a wide forecast
band (one day of history, no AEMO forecast) the plain plan cycles the battery on noise, paying the
round-trip losses and buying high.

This optimiser values the two directions of energy apart, by the forecast's own uncertainty
(:func:`energy_haircut_per_mwh`): discharge (GEN) at the planning price **minus** κ × half the band,
charging (LOAD) at the planning price **plus** κ × half the band, the band being the highest minus the
lowest forecast quantile of each interval (P95 − P05 with the default quantiles, $/MWh). A cycle is
planned only where its spread beats its losses *and* the uncertainty of both ends; a narrow band (AEMO's
pre-dispatch, a quiet regime) leaves the plan almost unchanged. The band widens with lead, so the haircut is
smallest in the first intervals: where planning prices are close, energy sold (or bought) soon is valued a few
$/MWh better than later and the plan acts earlier than ``lp-energy-fcas``'s (README "NSW1 August 2024: one
interval"). κ ∈ [0, 1) is the request's
``energy_uncertainty_weight`` (``[cycle] optimiser_uncertainty_weight``); unset, the version's
:data:`KAPPA_V1`. κ = 0 is ``lp-energy-fcas`` v1's plan bit for bit. FCAS prices are unchanged.

The LP is :func:`algorithms.market.optimise.solve_request` (one formulation,
:mod:`algorithms.market.lp_matrix`, with its optional separate LOAD price vector). The row duals the bid
builder reads (the value of stored energy, the joint-capacity values) are those of this LP: they value
stored energy at the uncertainty-adjusted prices the plan used, so the bid's headroom bands sell energy
beyond the plan only at a realised price above what the plan expects to get for it after the haircut,
and buy only below what it expects it to be worth. The reported objective is the plan's revenue at the
planning price (the haircut added back), like ``lp-energy-fcas``'s.

Version 2 differs in the lead profile of the haircut only (:data:`HAIRCUT_PROFILE_BY_VERSION`): every interval
of the horizon is valued off by the same amount, κ × the mean over the horizon of half the band. v1's haircut
grows with lead as the band widens, so energy sold later is valued lower than energy sold now, a systematic
"sell now" tilt of the plan's timing; v2's total haircut over a plan of the same throughput is of the same
size, with no tilt. v2 takes κ as v1 does (the request's, else :data:`KAPPA_V1`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from algorithms.common.errors import InvalidRequestError
from algorithms.common.products import ENERGY
from algorithms.market import optimise
from algorithms.market.forecast import PriceForecast, forecast_from_result, quantile_at
from vpp.v1 import common_pb2, worker_pb2

NAME = "lp-uncertainty-spread"
VERSION = "1"
ALGORITHM = common_pb2.AlgorithmRef(name=NAME, version=VERSION)

FloatArray = npt.NDArray[np.float64]

# v1's κ when the request does not carry one (the share of the half band taken off each direction), chosen on
# the tuning set of issue 15 (README "Energy only where the spread beats the band"): 0.25 over 0.5.
KAPPA_V1 = 0.25

# The lead profile of the haircut (:func:`energy_haircut_per_mwh`): each interval's own half band, or the
# horizon's mean half band at every interval.
HaircutProfile = Literal["by_interval", "horizon_mean"]
HAIRCUT_PROFILES: tuple[HaircutProfile, ...] = ("by_interval", "horizon_mean")
# The one difference between the versions: v1 by interval (grows with lead), v2 the same at every lead.
HAIRCUT_PROFILE_BY_VERSION: dict[str, HaircutProfile] = {"1": "by_interval", "2": "horizon_mean"}


def validate_kappa(kappa: float) -> float:
    """κ (dimensionless, the share of half the forecast band, $/MWh per $/MWh) checked to be in [0, 1).

    Raises InvalidRequestError naming the value otherwise: at κ ≥ 1 a plan could never trade energy on a
    forecast whose band is as wide as its spread."""
    if not (math.isfinite(kappa) and 0 <= kappa < 1):
        raise InvalidRequestError(f"energy_uncertainty_weight (kappa) must be in [0, 1), got {kappa}")
    return float(kappa)


def half_band_per_mwh(energy_forecast: PriceForecast) -> FloatArray:
    """Half the width of the forecast's band per interval ($/MWh): (highest quantile − lowest quantile) / 2,
    never negative; zeros for a forecast of one quantile."""
    levels = energy_forecast.quantiles
    low = quantile_at(energy_forecast, float(levels[0]))
    high = quantile_at(energy_forecast, float(levels[-1]))
    half: FloatArray = np.maximum(high - low, 0.0) / 2
    return half


def energy_haircut_per_mwh(energy_forecast: PriceForecast, kappa: float,
                           profile: HaircutProfile = "by_interval") -> FloatArray:
    """What each direction of energy is valued off the planning price by ($/MWh per interval): κ × half the
    band (:func:`half_band_per_mwh`). Discharge is valued at the planning price minus it, charging at the
    planning price plus it.

    ``profile`` is the haircut's shape over the lead: ``"by_interval"`` (v1) takes each interval's own half
    band; ``"horizon_mean"`` (v2) takes, at every interval, the mean over the horizon of the half band.
    ValueError for another profile."""
    half_band = half_band_per_mwh(energy_forecast)
    if profile == "horizon_mean":
        half_band = np.full_like(half_band, float(np.mean(half_band)) if half_band.size else 0.0)
    elif profile != "by_interval":
        raise ValueError(f"unknown haircut profile {profile!r}: expected one of {', '.join(HAIRCUT_PROFILES)}")
    haircut: FloatArray = validate_kappa(kappa) * half_band
    return haircut


def request_kappa(request: worker_pb2.OptimisationRequest) -> float:
    """The request's κ (``energy_uncertainty_weight``), or :data:`KAPPA_V1` when it carries none; validated."""
    if request.HasField("energy_uncertainty_weight"):
        return validate_kappa(request.energy_uncertainty_weight)
    return KAPPA_V1


def run_optimisation(request: worker_pb2.OptimisationRequest) -> worker_pb2.OptimisationResult:
    """Adapter of the current version (v1): an OptimisationRequest in, the uncertainty-aware plan out (MW, MWh,
    $; see the module docstring). Raises InvalidRequestError for malformed requests (κ outside [0, 1)
    included), as ``lp-energy-fcas`` does."""
    return _run_version(request, VERSION)


def run_optimisation_v2(request: worker_pb2.OptimisationRequest) -> worker_pb2.OptimisationResult:
    """Adapter of v2: as :func:`run_optimisation` with the haircut the same at every interval of the horizon
    (κ × the horizon's mean half band, $/MWh; see the module docstring)."""
    return _run_version(request, "2")


def _run_version(request: worker_pb2.OptimisationRequest, version: str) -> worker_pb2.OptimisationResult:
    if request.algorithm.name and (request.algorithm.name, request.algorithm.version) != (NAME, version):
        raise InvalidRequestError(
            f"algorithm {request.algorithm.name} v{request.algorithm.version} is not {NAME} v{version}")
    kappa = request_kappa(request)
    energy = [f for f in request.forecasts if f.product == ENERGY]
    haircut: FloatArray | None = None
    if (kappa > 0 and len(energy) == 1 and energy[0].status == worker_pb2.RESULT_STATUS_OK
            and energy[0].horizon_intervals == request.horizon_intervals > 0):
        haircut = energy_haircut_per_mwh(forecast_from_result(energy[0]), kappa,
                                         HAIRCUT_PROFILE_BY_VERSION[version])
    # Anything malformed (no ENERGY forecast, two of them, wrong lengths) is refused by the LP's adapter.
    result = optimise.solve_request(request, energy_haircut_per_mwh=haircut)
    result.algorithm.CopyFrom(request.algorithm if request.algorithm.name
                              else common_pb2.AlgorithmRef(name=NAME, version=version))
    if haircut is not None and len(result.gen_mw) == len(haircut):
        battery = request.battery
        throughput = (battery.mlf_gen * np.asarray(result.gen_mw, dtype=np.float64)
                      + battery.mlf_load * np.asarray(result.load_mw, dtype=np.float64))
        result.objective_dollars += optimise.NEM_INTERVAL_HOURS * float(np.sum(haircut * throughput))
    return result
