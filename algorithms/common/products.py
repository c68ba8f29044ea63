"""The NEM's products (bid types), defined once: ENERGY and the ten FCAS markets (shared/NEM.md).

Energy prices are $/MWh, FCAS prices $/MW/h. The names are AEMO's BIDTYPE values (the DISPATCHPRICE
columns are these names followed by ``RRP``; ENERGY's column is plain ``RRP``). The product list of a
run always comes from its data — the 1-second markets (RAISE1SEC, LOWER1SEC) only exist from
9 October 2023 — so code iterates the data's products and uses these names and predicates to tell
them apart; it never assumes all ten FCAS markets are present.

The energy product's name is not configurable: AEMO names it, and the forecaster, the optimiser, the
bid builder, the validator and the clearing all assume it.
"""

from __future__ import annotations

from collections.abc import Iterable

ENERGY = "ENERGY"

RAISE1SEC = "RAISE1SEC"
RAISE6SEC = "RAISE6SEC"
RAISE60SEC = "RAISE60SEC"
RAISE5MIN = "RAISE5MIN"
RAISEREG = "RAISEREG"
LOWER1SEC = "LOWER1SEC"
LOWER6SEC = "LOWER6SEC"
LOWER60SEC = "LOWER60SEC"
LOWER5MIN = "LOWER5MIN"
LOWERREG = "LOWERREG"

# Contingency services (they stack under the joint-capacity rule), fastest first, and regulation.
RAISE_CONTINGENCY: tuple[str, ...] = (RAISE1SEC, RAISE6SEC, RAISE60SEC, RAISE5MIN)
LOWER_CONTINGENCY: tuple[str, ...] = (LOWER1SEC, LOWER6SEC, LOWER60SEC, LOWER5MIN)
RAISE_REGULATION: tuple[str, ...] = (RAISEREG,)
LOWER_REGULATION: tuple[str, ...] = (LOWERREG,)

# Every FCAS market in the order of shared/NEM.md: the raise services, then the lower services.
RAISE_SERVICES: tuple[str, ...] = (*RAISE_CONTINGENCY, *RAISE_REGULATION)
LOWER_SERVICES: tuple[str, ...] = (*LOWER_CONTINGENCY, *LOWER_REGULATION)
FCAS_PRODUCTS: tuple[str, ...] = (*RAISE_SERVICES, *LOWER_SERVICES)
PRODUCTS: tuple[str, ...] = (ENERGY, *FCAS_PRODUCTS)

# Name prefixes of the raise and lower services, as the DISPATCHPRICE columns carry them.
RAISE_PREFIX = "RAISE"
LOWER_PREFIX = "LOWER"

_RAISE = frozenset(RAISE_SERVICES)
_LOWER = frozenset(LOWER_SERVICES)
_REGULATION = frozenset((*RAISE_REGULATION, *LOWER_REGULATION))
_CONTINGENCY = frozenset((*RAISE_CONTINGENCY, *LOWER_CONTINGENCY))


def is_fcas(product: str) -> bool:
    """True for one of the ten FCAS markets."""
    return product in _RAISE or product in _LOWER


def is_raise(product: str) -> bool:
    """True for a raise service (contingency or regulation)."""
    return product in _RAISE


def is_lower(product: str) -> bool:
    """True for a lower service (contingency or regulation)."""
    return product in _LOWER


def is_regulation(product: str) -> bool:
    """True for RAISEREG and LOWERREG."""
    return product in _REGULATION


def is_contingency(product: str) -> bool:
    """True for the contingency services (1 s, 6 s, 60 s, 5 min; raise and lower)."""
    return product in _CONTINGENCY


def fcas_products_of(products: Iterable[str]) -> tuple[str, ...]:
    """The products of ``products`` other than ENERGY, in their order (what the data trades as FCAS)."""
    return tuple(product for product in products if product != ENERGY)
