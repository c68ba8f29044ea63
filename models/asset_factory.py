"""A synthetic but realistic asset graph for tests and benchmarks, for any number of sites.

:func:`synthetic_asset_graph` hangs the given sites in three hierarchies (all vectorised, no per-site
Python loop, deterministic for a seed):

- ``electrical``: ``network-nem`` → ``region-{NSW1,QLD1,VIC1,SA1,TAS1}`` → ``substation-…`` (about 1 per
  1,000 sites) → ``feeder-…`` (about 1 per 100 sites) → site: five levels including the sites. Each
  site is connected from its commissioning time (2019–2022). :data:`FEEDER_SWITCH_FRACTION` of the
  sites move to another feeder of their region at :data:`FEEDER_SWITCH_AT`.
- ``geography``: ``country-AU`` → ``state-{NSW,QLD,VIC,SA,TAS}`` → ``postcode-NNNN`` (real postcode
  ranges of each state, about 1 per 50 sites) → site, from commissioning; the site row's postcode agrees.
- ``programme``: ``programme-vpp-x`` (60 % of sites, joining during 2021, 10 % of them leaving during
  2023) with the sub-group ``group-vpp-x-solar`` (its sites with PV: "battery + solar sites in VPP X"
  hang off the group, the others off the programme); ``programme-vpp-y`` (30 % of sites, from
  2022-01-01, overlapping VPP X): a site can be in several programmes at once.

Times are epoch ms UTC. The sites themselves come from :func:`simulator.population.make_site_parameters`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from algorithms.fleet.fleet_types import IntArray, SiteParameters, StrArray
from models.assets import OPEN_ENDED_MS, AssetEdges, AssetGraph, AssetNodes, SiteRecords

REGIONS = ("NSW1", "QLD1", "VIC1", "SA1", "TAS1")
REGION_STATES = ("NSW", "QLD", "VIC", "SA", "TAS")
REGION_SHARES = (0.35, 0.25, 0.25, 0.10, 0.05)
STATE_POSTCODE_RANGES = ((2000, 2999), (4000, 4999), (3000, 3999), (5000, 5799), (7000, 7799))
SITES_PER_FEEDER = 100
FEEDERS_PER_SUBSTATION = 10
SITES_PER_POSTCODE = 50
NETWORK_ID = "network-nem"
COUNTRY_ID = "country-AU"
PROGRAMME_X = "programme-vpp-x"
PROGRAMME_Y = "programme-vpp-y"
GROUP_X_SOLAR = "group-vpp-x-solar"

NETWORK_FROM = datetime(2015, 1, 1, tzinfo=UTC)
GEOGRAPHY_FROM = datetime(2000, 1, 1, tzinfo=UTC)
COMMISSIONED_FROM = datetime(2019, 1, 1, tzinfo=UTC)
COMMISSIONED_TO = datetime(2023, 1, 1, tzinfo=UTC)
FEEDER_SWITCH_AT = datetime(2023, 7, 1, tzinfo=UTC)
FEEDER_SWITCH_FRACTION = 0.02
PROGRAMME_X_JOIN = (datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC))
PROGRAMME_X_LEAVE = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
PROGRAMME_Y_FROM = datetime(2022, 1, 1, tzinfo=UTC)
GRAPH_COMPLETE_AT = datetime(2024, 6, 1, tzinfo=UTC)
"""A time at which every site is connected (after all commissioning and the feeder switch)."""


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds UTC of an aware datetime."""
    return int(moment.timestamp() * 1000)


def _uniform_ms(rng: np.random.Generator, bounds: tuple[datetime, datetime], size: int) -> IntArray:
    low, high = epoch_ms(bounds[0]), epoch_ms(bounds[1])
    # Whole minutes, so that files and the database hold the same instants.
    return (rng.integers(low // 60_000, high // 60_000, size=size) * 60_000).astype(np.int64)


def _edges(hierarchy: str, parents: StrArray, children: StrArray, valid_from_ms: IntArray | int,
           valid_to_ms: IntArray | int = OPEN_ENDED_MS) -> AssetEdges:
    count = len(children)
    return AssetEdges(
        hierarchies=np.full(count, hierarchy).astype(np.str_),
        parent_ids=np.asarray(parents, dtype=np.str_),
        child_ids=np.asarray(children, dtype=np.str_),
        valid_from_ms=np.broadcast_to(np.asarray(valid_from_ms, dtype=np.int64), (count,)).copy(),
        valid_to_ms=np.broadcast_to(np.asarray(valid_to_ms, dtype=np.int64), (count,)).copy(),
    )


def concat_edges(parts: list[AssetEdges]) -> AssetEdges:
    """The edges of every part, in order."""
    return AssetEdges(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in ("hierarchies", "parent_ids", "child_ids", "valid_from_ms", "valid_to_ms")))


def synthetic_asset_graph(sites: SiteParameters, seed: int) -> AssetGraph:
    """The multi-hierarchy graph of the module docstring around ``sites`` (any count, 100,000 included)."""
    rng = np.random.default_rng(seed)
    n = sites.site_count
    site_ids = sites.site_ids
    commissioned_ms = _uniform_ms(rng, (COMMISSIONED_FROM, COMMISSIONED_TO), n)
    region_index = rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    region_sizes = np.bincount(region_index, minlength=len(REGIONS))

    node_parts: list[tuple[StrArray, str, StrArray]] = []  # (ids, kind, names)
    electrical, geography = [], []
    site_feeder = np.empty(n, dtype=object)
    site_switch_feeder = np.empty(n, dtype=object)
    postcodes = np.empty(n, dtype=object)
    site_postcode_node = np.empty(n, dtype=object)
    region_ids = np.char.add("region-", np.array(REGIONS, dtype=np.str_))
    state_ids = np.char.add("state-", np.array(REGION_STATES, dtype=np.str_))
    node_parts.append((np.array([NETWORK_ID], dtype=np.str_), "network", np.array(["NEM"], dtype=np.str_)))
    node_parts.append((region_ids, "region", np.array(REGIONS, dtype=np.str_)))
    node_parts.append((np.array([COUNTRY_ID], dtype=np.str_), "country", np.array(["Australia"], dtype=np.str_)))
    node_parts.append((state_ids, "state", np.array(REGION_STATES, dtype=np.str_)))
    network_ms, geography_ms = epoch_ms(NETWORK_FROM), epoch_ms(GEOGRAPHY_FROM)
    electrical.append(_edges("electrical", np.full(len(REGIONS), NETWORK_ID), region_ids, network_ms))
    geography.append(_edges("geography", np.full(len(REGIONS), COUNTRY_ID), state_ids, geography_ms))

    # Per region (5 iterations): substations, feeders and postcodes, then vectorised site assignment.
    for r, region in enumerate(REGIONS):
        members = np.flatnonzero(region_index == r)
        count = int(region_sizes[r])
        feeders = max(1, round(count / SITES_PER_FEEDER))
        substations = max(1, round(feeders / FEEDERS_PER_SUBSTATION))
        substation_ids = np.char.add(f"substation-{region}-", np.char.zfill(np.arange(substations).astype(np.str_), 3))
        feeder_substation = np.arange(feeders) % substations
        feeder_ids = np.char.add(np.char.add(substation_ids[feeder_substation], "-f"),
                                 np.char.zfill((np.arange(feeders) // substations).astype(np.str_), 2))
        feeder_ids = np.char.replace(feeder_ids, "substation-", "feeder-")
        node_parts.append((substation_ids, "substation", substation_ids))
        node_parts.append((feeder_ids, "feeder", feeder_ids))
        electrical.append(_edges("electrical", np.full(substations, region_ids[r]), substation_ids, network_ms))
        electrical.append(_edges("electrical", substation_ids[feeder_substation], feeder_ids, network_ms))
        feeder_of_site = rng.integers(0, feeders, size=count)
        site_feeder[members] = feeder_ids[feeder_of_site]
        # The switch target: another feeder of the region (the same one when the region has a single feeder).
        siblings = (feeder_of_site + substations) % feeders
        site_switch_feeder[members] = feeder_ids[siblings]

        low, high = STATE_POSTCODE_RANGES[r]
        postcode_count = int(min(high - low + 1, max(1, round(count / SITES_PER_POSTCODE))))
        postcode_numbers = np.sort(rng.choice(np.arange(low, high + 1), size=postcode_count, replace=False))
        postcode_ids = np.char.add("postcode-", postcode_numbers.astype(np.str_))
        node_parts.append((postcode_ids, "postcode", postcode_numbers.astype(np.str_)))
        geography.append(_edges("geography", np.full(postcode_count, state_ids[r]), postcode_ids, geography_ms))
        postcode_of_site = rng.integers(0, postcode_count, size=count)
        postcodes[members] = postcode_numbers[postcode_of_site].astype(np.str_)
        site_postcode_node[members] = postcode_ids[postcode_of_site]

    site_feeder_ids = site_feeder.astype(np.str_)
    switch_ids = site_switch_feeder.astype(np.str_)
    switches = (rng.random(n) < FEEDER_SWITCH_FRACTION) & (switch_ids != site_feeder_ids)
    switch_ms = epoch_ms(FEEDER_SWITCH_AT)
    stays = ~switches
    electrical.append(_edges("electrical", site_feeder_ids[stays], site_ids[stays], commissioned_ms[stays]))
    electrical.append(_edges("electrical", site_feeder_ids[switches], site_ids[switches], commissioned_ms[switches],
                             switch_ms))
    electrical.append(_edges("electrical", switch_ids[switches], site_ids[switches], switch_ms))
    geography.append(_edges("geography", site_postcode_node.astype(np.str_), site_ids, commissioned_ms))

    programme = _programme_edges(rng, sites, commissioned_ms)
    node_parts.append((np.array([PROGRAMME_X, PROGRAMME_Y], dtype=np.str_), "programme",
                       np.array(["VPP X", "VPP Y"], dtype=np.str_)))
    node_parts.append((np.array([GROUP_X_SOLAR], dtype=np.str_), "group",
                       np.array(["battery + solar sites in VPP X"], dtype=np.str_)))

    node_ids = np.concatenate([part[0] for part in node_parts]).astype(np.str_)
    kinds = np.concatenate([np.full(len(part[0]), part[1]) for part in node_parts]).astype(np.str_)
    names = np.concatenate([part[2] for part in node_parts]).astype(np.str_)
    order = np.argsort(node_ids, kind="stable")
    return AssetGraph(
        nodes=AssetNodes(node_ids=node_ids[order], kinds=kinds[order], names=names[order]),
        sites=SiteRecords(parameters=sites, postcodes=postcodes.astype(np.str_),
                          battery_counts=np.maximum(1, np.round(sites.capacity_kwh / 13.5)).astype(np.int64),
                          names=np.full(n, "", dtype="<U1")),
        edges=concat_edges([*electrical, *geography, programme]),
    )


def _programme_edges(rng: np.random.Generator, sites: SiteParameters, commissioned_ms: IntArray) -> AssetEdges:
    n = sites.site_count
    site_ids = sites.site_ids
    in_x = rng.random(n) < 0.6
    joins_x = np.maximum(_uniform_ms(rng, PROGRAMME_X_JOIN, n), commissioned_ms)
    leaves_x = np.where(rng.random(n) < 0.1, _uniform_ms(rng, PROGRAMME_X_LEAVE, n), OPEN_ENDED_MS)
    solar = sites.pv_capacity_kw > 0
    x_parent = np.where(solar, GROUP_X_SOLAR, PROGRAMME_X).astype(np.str_)
    in_y = rng.random(n) < 0.3
    joins_y = np.maximum(epoch_ms(PROGRAMME_Y_FROM), commissioned_ms)
    return concat_edges([
        _edges("programme", np.array([PROGRAMME_X], dtype=np.str_), np.array([GROUP_X_SOLAR], dtype=np.str_),
               epoch_ms(PROGRAMME_X_JOIN[0])),
        _edges("programme", x_parent[in_x], site_ids[in_x], joins_x[in_x], leaves_x[in_x]),
        _edges("programme", np.full(int(in_y.sum()), PROGRAMME_Y), site_ids[in_y], joins_y[in_y]),
    ])
