"""Bids as AEMO's submitBids JSON: our bid -> JSON -> bid field by field; every real bid -> JSON -> AEMO's rows;
payloads that are not AEMO's are refused with the field's path."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aemo.bid_json import (
    BidJsonError,
    BidSubmission,
    bid_to_submission,
    default_reference_id,
    submission_to_bid,
    submission_to_bids,
)
from aemo.bids import BidTables, PublishedBids, published_bids, read_bid_tables
from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_builder import build_bid
from algorithms.market.bid_validation import validate_bid
from algorithms.market.registration import UnitKind, UnitRegistration
from settings import load_settings
from tests.aemo_fixtures import NEMWEB_ROOT
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

CONFIG = load_settings(environ={})
RULES = CONFIG.market
CLOSE = RULES.daily_bid_close
BATTERY = battery_spec_from_settings(CONFIG.battery)
FCAS = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
FIRST = datetime(2021, 1, 5, 17, 35)
OFFERED = datetime(2021, 1, 5, 17, 31, 12)


def _battery_rebid() -> bid_pb2.Bid:
    """A REBID of the bid builder with every field AEMO's format carries set."""
    hours = 5 / 60
    gen, load = [120.0, 0.0, 0.0], [0.0, 80.0, 0.0]
    soc = 97.0 + np.cumsum(0.92 * np.asarray(load) * hours - np.asarray(gen) * hours / 0.92)
    plan = worker_pb2.OptimisationResult(
        status=worker_pb2.RESULT_STATUS_OPTIMAL, first_interval=nem_time.to_timestamp(FIRST), horizon_intervals=3,
        gen_mw=gen, load_mw=load, state_of_charge_mwh=soc.tolist(),
        fcas=[worker_pb2.ProductSchedule(product=p, enablement_mw=[10.0, 0.0, 5.0]) for p in FCAS])
    bid = build_bid(plan, BATTERY, CONFIG.bidding, RULES, dispatch_interval=FIRST, offer_time=OFFERED, version=4,
                    fcas_products=FCAS, initial_state_of_charge_mwh=97.0, plan_hash="abc123")
    bid.event_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 20)))
    bid.aware_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 25)))
    bid.decision_time.CopyFrom(nem_time.to_timestamp(datetime(2021, 1, 5, 17, 30)))
    bid.rebid_category = "F"
    bid.reference_id = "HPR1-20210105-1735-v4"
    bid.participant_id = "PARTICIPANT1"
    gen_offer = next(o for o in bid.offers if o.direction == common_pb2.DIRECTION_GEN and o.product == "ENERGY")
    gen_offer.daily_energy_constraint_mwh = 180.0
    gen_offer.periods[1].fixed_load_mw = 5.0
    load_offer = next(o for o in bid.offers if o.direction == common_pb2.DIRECTION_LOAD and o.product == "ENERGY")
    load_offer.periods[0].energy_limit_mwh = 150.0
    return bid


def _without_internal_fields(bid: bid_pb2.Bid) -> bid_pb2.Bid:
    """The bid without what AEMO's format does not carry: the platform's version and plan hash."""
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    copy.version = 0
    copy.plan_hash = ""
    return copy


def test_our_bid_round_trips_through_aemo_json_field_by_field() -> None:
    bid = _battery_rebid()
    assert validate_bid(bid, BATTERY, RULES, products=("ENERGY", *FCAS)) == []
    payload = json.loads(json.dumps(bid_to_submission(bid, record=True)))
    back = submission_to_bid(payload, daily_bid_close=CLOSE)
    expected = _without_internal_fields(bid)
    for field in expected.DESCRIPTOR.fields:
        assert getattr(back, field.name) == getattr(expected, field.name), field.name
    assert back == expected


def test_the_payload_has_aemo_fields() -> None:
    bid = _battery_rebid()
    payload = bid_to_submission(bid, authorised_by="autobidder", comments="cycle 17:31")
    assert (payload["referenceId"], payload["authorisedBy"], payload["comments"]) == (
        "HPR1-20210105-1735-v4", "autobidder", "cycle 17:31")
    assert "offerTimestamp" not in payload and payload["mnspBids"] == []  # AEMO stamps the offer time
    gen, load = payload["energyBids"]
    assert (gen["duid"], gen["tradingDate"], gen["direction"], load["direction"]) == (
        "HPR1", "2021-01-05", "GEN", "LOAD")
    assert "entryType" not in gen
    assert gen["rebidExplanation"] == {
        "reason": bid.rebid_explanation, "eventTime": "2021-01-05T17:20:00+10:00",
        "awareTime": "2021-01-05T17:25:00+10:00", "decisionTime": "2021-01-05T17:30:00+10:00", "category": "F"}
    assert gen["dailyEnergyConstraint"] == 180 and "fastStartProfile" not in gen
    assert [p["periodId"] for p in gen["energyPeriods"]] == [163, 164, 165]  # 17:35 is the 163rd of the day
    assert gen["energyPeriods"][1]["fixedLoad"] == 5 and "fixedLoad" not in gen["energyPeriods"][0]
    assert load["energyPeriods"][0]["energyLimit"] == 150 and "energyLimit" not in load["energyPeriods"][1]
    services = [(f["service"], f.get("direction")) for f in payload["fcasBids"]]
    assert ("RAISEREG", "GEN") in services and ("RAISEREG", "LOWERREG") not in services
    assert ("RAISE6SEC", None) in services and ("LOWERREG", "LOAD") in services
    lower_load = next(f for f in payload["fcasBids"] if (f["service"], f.get("direction")) == ("LOWERREG", "LOAD"))
    assert set(lower_load["fcasPeriods"][0]) == {"periodId", "maxAvail", "bandAvail", "enablementMin",
                                                 "lowBreakPoint", "highBreakPoint", "enablementMax"}
    recorded = bid_to_submission(bid, record=True)
    assert recorded["offerTimestamp"] == "2021-01-05T17:31:12+10:00" and recorded["participantId"] == "PARTICIPANT1"
    assert {b["entryType"] for b in recorded["energyBids"] + recorded["fcasBids"]} == {"REBID"}


def test_ramp_rate_reason_travels_in_the_explanation_and_reference_id_defaults() -> None:
    bid = _battery_rebid()
    bid.ramp_rate_reason = "inverter 2 of 4 out since 16:50"
    bid.reference_id = ""
    payload = bid_to_submission(bid)
    reason = payload["energyBids"][0]["rebidExplanation"]["reason"]
    assert reason.startswith(bid.rebid_explanation) and reason.endswith("Ramp rates: inverter 2 of 4 out since 16:50")
    assert payload["referenceId"] == default_reference_id(bid) == "HPR1-2021-01-05-1735-v4"


def test_without_offer_timestamp_the_offer_time_decides_the_entry_type() -> None:
    payload = bid_to_submission(_battery_rebid())  # a request: no offerTimestamp, no entryType
    rebid = submission_to_bid(payload, daily_bid_close=CLOSE, offer_time=OFFERED)
    assert rebid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    daily = submission_to_bid(payload, daily_bid_close=CLOSE, offer_time=datetime(2021, 1, 4, 12, 30))
    assert daily.entry_type == bid_pb2.ENTRY_TYPE_DAILY
    unstamped = submission_to_bid(payload, daily_bid_close=CLOSE)
    assert not unstamped.HasField("offer_time")


@pytest.fixture(scope="module")
def real() -> tuple[BidTables, PublishedBids]:
    tables = read_bid_tables([NEMWEB_ROOT])
    assert tables.day_offers is not None and tables.period_offers is not None
    return tables, published_bids(tables.day_offers, tables.period_offers, CLOSE)


def _periods_of(payloads: list[dict[str, Any]]) -> pd.DataFrame:
    """The energy and FCAS periods of payloads as rows keyed like AEMO's BIDPEROFFER_D."""
    rows: list[dict[str, Any]] = []
    for payload in payloads:
        offer_time = pd.Timestamp(datetime.fromisoformat(payload["offerTimestamp"]).replace(tzinfo=None))
        for kind, periods_key in (("energyBids", "energyPeriods"), ("fcasBids", "fcasPeriods")):
            for bid in payload[kind]:
                day = pd.Timestamp(bid["tradingDate"])
                for period in bid[periods_key]:
                    rows.append({"DUID": bid["duid"], "SETTLEMENTDATE": day, "BIDTYPE": bid.get("service", "ENERGY"),
                                 "DIRECTION": bid.get("direction", ""), "OFFERDATE": offer_time,
                                 "INTERVAL_DATETIME": day + pd.Timedelta(hours=4, minutes=5 * period["periodId"]),
                                 "MAXAVAIL": period["maxAvail"], "ROCUP": period.get("rampUpRate", 0),
                                 "ROCDOWN": period.get("rampDownRate", 0),
                                 "PASAAVAILABILITY": period.get("pasaAvail", 0),
                                 "FIXEDLOAD": period.get("fixedLoad", 0), "ENERGYLIMIT": period.get("energyLimit", 0),
                                 "ENABLEMENTMIN": period.get("enablementMin", 0),
                                 "LOWBREAKPOINT": period.get("lowBreakPoint", 0),
                                 "HIGHBREAKPOINT": period.get("highBreakPoint", 0),
                                 "ENABLEMENTMAX": period.get("enablementMax", 0),
                                 **{f"BANDAVAIL{i + 1}": mw for i, mw in enumerate(period["bandAvail"])}})
    return pd.DataFrame(rows)


def test_every_real_bid_encodes_to_aemos_own_rows(real: tuple[BidTables, PublishedBids]) -> None:
    tables, read = real
    assert tables.day_offers is not None and tables.period_offers is not None
    payloads = [json.loads(json.dumps(bid_to_submission(published.bid, record=True))) for published in read.bids]
    # day fields: prices, entry type and explanation against BIDDAYOFFER_D
    days = tables.day_offers.fillna({"DIRECTION": "", "REBIDEXPLANATION": ""})
    day_index = days.set_index(["DUID", "SETTLEMENTDATE", "BIDTYPE", "DIRECTION"])
    compared = 0
    for payload in payloads:
        offered = pd.Timestamp(datetime.fromisoformat(payload["offerTimestamp"]).replace(tzinfo=None))
        for bid in payload["energyBids"] + payload["fcasBids"]:
            row = day_index.loc[(bid["duid"], pd.Timestamp(bid["tradingDate"]), bid.get("service", "ENERGY"),
                                 bid.get("direction", ""))]
            assert bid["prices"] == pytest.approx([row[f"PRICEBAND{i}"] for i in range(1, 11)])
            if row["OFFERDATE"] == offered:  # the offer BIDDAYOFFER_D names
                assert bid["entryType"] == row["ENTRYTYPE"]
                assert bid.get("rebidExplanation", {}).get("reason", "") == row["REBIDEXPLANATION"]
                compared += 1
            if bid.get("service") is None:
                assert bid.get("dailyEnergyConstraint", 0) == pytest.approx(np.nan_to_num(row["DAILYENERGYCONSTRAINT"]))
    assert compared == len(days)  # every day offer was met once
    # period fields: every BIDPEROFFER_D row with a day offer, value by value
    encoded = _periods_of(payloads)
    periods = tables.period_offers.fillna({"DIRECTION": ""})
    key = ["DUID", "SETTLEMENTDATE", "BIDTYPE", "DIRECTION", "INTERVAL_DATETIME"]
    merged = periods.merge(encoded, on=key, how="inner", suffixes=("", "_json"))
    with_day = periods.merge(days[["DUID", "SETTLEMENTDATE", "BIDTYPE", "DIRECTION"]], how="inner")
    assert len(merged) == len(with_day) == len(encoded)
    assert (merged["OFFERDATE"] == merged["OFFERDATE_json"]).all()
    for column in ("MAXAVAIL", "ROCUP", "ROCDOWN", "PASAAVAILABILITY", "FIXEDLOAD", "ENERGYLIMIT", "ENABLEMENTMIN",
                   "LOWBREAKPOINT", "HIGHBREAKPOINT", "ENABLEMENTMAX", *(f"BANDAVAIL{i}" for i in range(1, 11))):
        np.testing.assert_allclose(merged[f"{column}_json"].to_numpy(dtype=float),
                                   np.nan_to_num(merged[column].to_numpy(dtype=float)), err_msg=column)


def test_every_real_bid_round_trips(real: tuple[BidTables, PublishedBids]) -> None:
    _, read = real
    for published in read.bids:
        payload = json.loads(json.dumps(bid_to_submission(published.bid, record=True)))
        back = submission_to_bid(payload, daily_bid_close=CLOSE)
        expected = _without_internal_fields(published.bid)
        expected.reference_id = default_reference_id(published.bid)
        expected.submitted_for_trading_day = ""  # AEMO's BIDSETTLEMENTDATE is not part of a submission
        assert back == expected, (published.unit_id, published.bid.trading_day)


def _bdu_payload() -> dict[str, Any]:
    """A bidirectional unit's submission written as AEMO writes its own example (capitalised FCAS keys, the
    rebid reason as plain text)."""
    energy_period = {"periodId": 1, "rampUpRate": 100, "rampDownRate": 100, "pasaAvail": 50, "maxAvail": 20,
                     "bandAvail": [10, 0, 0, 0, 0, 0, 10, 0, 0, 0]}
    prices = [-1000, 0, 1, 2, 4, 8, 16, 32, 64, 15000]
    fcas_period = {"periodId": 1, "MaxAvail": 20, "BandAvail": [10, 10, 0, 0, 0, 0, 0, 0, 0, 0]}
    fcas_prices = [*prices[1:], 15001]
    return {
        "referenceId": "ref-1", "comments": "test", "authorisedBy": "OPS",
        "energyBids": [
            {"tradingDate": "2025-03-10", "duid": "BDU1", "direction": "LOAD", "prices": prices,
             "rebidExplanation": "Initial offer",
             "energyPeriods": [{**energy_period, "energyLimit": 90}]},
            {"tradingDate": "2025-03-10", "duid": "BDU1", "direction": "GEN", "prices": [p + 0.5 for p in prices],
             "fastStartProfile": True, "energyPeriods": [{**energy_period, "energyLimit": 10,
                                                          "bandAvail": [0, 0, 0, 0, 0, 0, 5, 5, 10, 0]}]}],
        "fcasBids": [
            {"tradingDate": "2025-03-10", "duid": "BDU1", "direction": "LOAD", "service": "RAISEREG",
             "prices": fcas_prices,
             "fcasPeriods": [{**fcas_period, "EnablementMin": -5, "LowBreakPoint": -5, "HighBreakPoint": -40,
                              "EnablementMax": -50}]},
            {"tradingDate": "2025-03-10", "duid": "BDU1", "service": "RAISE1SEC", "prices": fcas_prices,
             "fcasPeriods": [{**fcas_period, "EnablementMin": -50, "LowBreakPoint": -50, "HighBreakPoint": 30,
                              "EnablementMax": 50}]}],
        "mnspBids": []}


def test_a_bdu_submission_in_aemos_own_style_reads_and_validates() -> None:
    bid = submission_to_bid(_bdu_payload(), daily_bid_close=CLOSE, offer_time=datetime(2025, 3, 9, 11, 0))
    assert [(o.product, o.direction) for o in bid.offers] == [
        ("ENERGY", common_pb2.DIRECTION_LOAD), ("ENERGY", common_pb2.DIRECTION_GEN),
        ("RAISEREG", common_pb2.DIRECTION_LOAD), ("RAISE1SEC", common_pb2.DIRECTION_UNSPECIFIED)]
    assert bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY and bid.rebid_explanation == "Initial offer"
    assert nem_time.from_timestamp(bid.dispatch_interval) == datetime(2025, 3, 10, 4, 5)
    assert bid.offers[2].periods[0].high_breakpoint_mw == -40
    bdu = UnitRegistration("BDU1", UnitKind.BIDIRECTIONAL, max_capacity_mw=50.0, storage_mwh=100.0,
                           min_ramp_up_mw_per_min=3.0, min_ramp_down_mw_per_min=3.0)
    products = ("ENERGY", "RAISEREG", "RAISE1SEC")
    assert validate_bid(bid, bdu, RULES, products=products) == []
    crossed = _bdu_payload()
    crossed["energyBids"][1]["energyPeriods"][0]["energyLimit"] = 90  # minimum storage not below the maximum
    violations = validate_bid(submission_to_bid(crossed, daily_bid_close=CLOSE, offer_time=datetime(2025, 3, 9)),
                              bdu, RULES, products=products)
    assert [(v.rule, v.field) for v in violations] == [("V6", "energy_limit_mwh")]


@pytest.mark.parametrize("edit, path", [
    (lambda p: p.pop("energyBids") and p.update(energyBids={}), "payload.energyBids: expected a list"),
    (lambda p: p["energyBids"][0].pop("duid"), "energyBids[0].duid is missing"),
    (lambda p: p["energyBids"][1]["energyPeriods"][0].update(periodId=289), "energyBids[1].energyPeriods[0].periodId"),
    (lambda p: p["energyBids"][0]["energyPeriods"][0].update(bandAvail=[1, "2"]),
     "energyBids[0].energyPeriods[0].bandAvail: expected a list of numbers"),
    (lambda p: p["fcasBids"][0].update(direction="UP"), "fcasBids[0].direction: 'UP' is neither GEN nor LOAD"),
    (lambda p: p["fcasBids"][1]["fcasPeriods"][0].pop("EnablementMax"),
     "fcasBids[1].fcasPeriods[0].enablementMax is missing"),
    (lambda p: p["energyBids"][0].update(tradingDate="10/03/2025"), "energyBids[0].tradingDate"),
    (lambda p: p["energyBids"][0].update(rebidExplanation={"reason": "x", "eventTime": "soon"}),
     "energyBids[0].rebidExplanation.eventTime: 'soon' is not an ISO 8601 time"),
    (lambda p: p.update(mnspBids=[{"interconnectorId": "T-V-MNSP1"}]), "MNSP bids are not supported"),
])
def test_payloads_that_are_not_aemos_are_refused_with_the_path(edit: Any, path: str) -> None:
    payload = _bdu_payload()
    edit(payload)
    with pytest.raises(BidJsonError) as error:
        submission_to_bids(payload, daily_bid_close=CLOSE)
    assert path in str(error.value)


def test_rebid_times_of_day_are_read_against_the_offer_time() -> None:
    payload = _bdu_payload()
    payload["offerTimestamp"] = "2025-03-10T00:10:05+10:00"
    payload["energyBids"][0]["rebidExplanation"] = {"reason": "price forecast", "eventTime": "23:55:00",
                                                    "awareTime": "00:01:00", "category": "A"}
    bid = submission_to_bid(payload, daily_bid_close=CLOSE)
    assert nem_time.from_timestamp(bid.event_time) == datetime(2025, 3, 9, 23, 55)  # the evening before
    assert nem_time.from_timestamp(bid.aware_time) == datetime(2025, 3, 10, 0, 1)
    assert bid.rebid_category == "A" and bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    without_stamp = _bdu_payload()
    without_stamp["energyBids"][0]["rebidExplanation"] = {"reason": "r", "eventTime": "23:55:00"}
    with pytest.raises(BidJsonError, match="needs the submission's offerTimestamp"):
        submission_to_bids(without_stamp, daily_bid_close=CLOSE)


def test_typed_payload_reads_back_unchanged() -> None:
    submission = BidSubmission.from_json(json.loads(json.dumps(bid_to_submission(_battery_rebid(), record=True))))
    assert BidSubmission.from_json(submission.to_json()) == submission
    assert submission.offer_timestamp == OFFERED and submission.energy_bids[0].energy_periods[0].period_id == 163
    assert submission.energy_bids[0].rebid_explanation is not None
    assert submission.energy_bids[0].rebid_explanation.event_time == OFFERED - timedelta(minutes=11, seconds=12)
    assert time(17, 20) == submission.energy_bids[0].rebid_explanation.event_time.time()
