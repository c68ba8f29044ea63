-- Load history of asset-graph nodes (feeders, substations, regions) for peak shaving.
-- One row per node and 5-minute interval, named by the interval's end (timestamptz, a multiple of 300 s).
-- load_mw: household consumption of the node's sites; net_load_mw: consumption less rooftop PV, before
-- batteries (what the node would carry with idle batteries); sites_reporting: sites the figures come from.

CREATE TABLE node_load_history (
    node_id         text NOT NULL,
    interval_end    timestamptz NOT NULL,
    load_mw         double precision NOT NULL CHECK (load_mw > '-Infinity' AND load_mw < 'Infinity'),
    net_load_mw     double precision NOT NULL CHECK (net_load_mw > '-Infinity' AND net_load_mw < 'Infinity'),
    sites_reporting integer NOT NULL CHECK (sites_reporting >= 0),
    PRIMARY KEY (node_id, interval_end),
    CHECK (extract(epoch FROM interval_end) = floor(extract(epoch FROM interval_end) / 300) * 300)
);
