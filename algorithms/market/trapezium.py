"""The FCAS trapezium of an offer, on the unit's net output.

A period offer of an FCAS product carries four corners (MW): ENABLEMENTMIN, LOWBREAKPOINT, HIGHBREAKPOINT,
ENABLEMENTMAX. The service can be enabled only while the unit's energy target lies between the enablement
limits, up to MAXAVAIL between the breakpoints and linearly less outside them.

How the corners read depends on the offer's direction (AEMO's rules since June 2024):

* no direction, GEN, or BIDIRECTIONAL (a bidirectional unit's contingency offer): the corners are net output
  (MW, generation positive, charging negative) in increasing order,
  ``ENABLEMENTMIN <= LOWBREAKPOINT <= HIGHBREAKPOINT <= ENABLEMENTMAX``;
* LOAD (a bidirectional unit's regulation offer for its consuming side): the corners are the same figures
  for consumption, written as negative net output and so mirrored:
  ``0 >= ENABLEMENTMIN >= LOWBREAKPOINT >= HIGHBREAKPOINT >= ENABLEMENTMAX`` (as in AEMO's own example
  submission: ``-66, -66, -130, -130``).

:func:`net_output_corners` turns either form into increasing net-output corners, the one form the market
model (:func:`algorithms.market.clearing.trapezium_limit_mw`) and the rule V7 work with.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vpp.v1 import common_pb2

FloatArray = npt.NDArray[np.float64]


def net_output_corners(direction: int, enablement_min_mw: FloatArray, low_breakpoint_mw: FloatArray,
                       high_breakpoint_mw: FloatArray, enablement_max_mw: FloatArray) -> FloatArray:
    """The corners as increasing net output (MW), one row per period: ``[lower limit, rising breakpoint,
    falling breakpoint, upper limit]``. A LOAD offer's mirrored corners are read in reverse (see the module
    docstring); any other direction's as given."""
    corners = np.vstack([np.asarray(enablement_min_mw, dtype=np.float64),
                         np.asarray(low_breakpoint_mw, dtype=np.float64),
                         np.asarray(high_breakpoint_mw, dtype=np.float64),
                         np.asarray(enablement_max_mw, dtype=np.float64)]).T
    if direction == common_pb2.DIRECTION_LOAD:
        return corners[:, ::-1]
    return corners


def offer_corners(direction: int, net_output: FloatArray) -> FloatArray:
    """The inverse of :func:`net_output_corners`: the ENABLEMENTMIN, LOWBREAKPOINT, HIGHBREAKPOINT,
    ENABLEMENTMAX columns an offer in ``direction`` carries for increasing net-output corners."""
    corners = np.asarray(net_output, dtype=np.float64)
    return corners[:, ::-1] if direction == common_pb2.DIRECTION_LOAD else corners
