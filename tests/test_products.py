"""The NEM's product names, defined once (algorithms/common/products.py), against AEMO's real files."""

from __future__ import annotations

from aemo.mms import load_dispatch_prices
from algorithms.common import products
from algorithms.common.products import (
    ENERGY,
    FCAS_PRODUCTS,
    PRODUCTS,
    fcas_products_of,
    is_contingency,
    is_fcas,
    is_lower,
    is_raise,
    is_regulation,
)
from settings import load_settings


def test_products_follow_the_market_specification_order() -> None:
    # shared/NEM.md: ENERGY, and ten FCAS markets in this order.
    assert PRODUCTS == ("ENERGY", "RAISE1SEC", "RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
                        "LOWER1SEC", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
    assert ENERGY not in FCAS_PRODUCTS and len(FCAS_PRODUCTS) == 10


def test_every_fcas_market_is_raise_or_lower_and_regulation_or_contingency() -> None:
    for product in FCAS_PRODUCTS:
        assert is_fcas(product)
        assert is_raise(product) != is_lower(product), product
        assert is_regulation(product) != is_contingency(product), product
    assert [p for p in FCAS_PRODUCTS if is_regulation(p)] == ["RAISEREG", "LOWERREG"]
    assert [p for p in FCAS_PRODUCTS if is_raise(p)] == list(products.RAISE_SERVICES)
    for other in (ENERGY, "REGULATION", "RAISE", ""):
        assert not (is_fcas(other) or is_raise(other) or is_lower(other) or is_regulation(other)
                    or is_contingency(other)), other


def test_the_data_names_its_products_with_these_names() -> None:
    # January 2021 predates the 1-second markets: the data has eight FCAS markets, and the code takes
    # the list from the data.
    dispatch = load_dispatch_prices(load_settings(environ={}).market_data.data_dir)
    assert dispatch.products[0] == ENERGY
    assert set(dispatch.products) <= set(PRODUCTS)
    assert fcas_products_of(dispatch.products) == tuple(p for p in FCAS_PRODUCTS if p in dispatch.products)
    assert len(fcas_products_of(dispatch.products)) == 8
    assert "RAISE1SEC" not in dispatch.products and "LOWER1SEC" not in dispatch.products
