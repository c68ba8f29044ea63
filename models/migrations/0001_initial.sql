-- Initial schema: bids, cleared intervals (market outcomes), unit state, AutoBidder cycles.
-- Market times (dispatch_interval, trading_day, ...) are AEST, interval-ending, stored as naive timestamps.

-- Every bid the market received, accepted or rejected (the audit trail).
CREATE TABLE bids (
    bid_id            text PRIMARY KEY,          -- "{unit_id}/{trading_day}/{interval_no:03d}/v{version}"
    unit_id           text NOT NULL,
    trading_day       date NOT NULL,
    dispatch_interval timestamp NOT NULL,        -- first interval this version applies to
    version           integer NOT NULL CHECK (version >= 0),
    entry_type        text NOT NULL,
    status            text NOT NULL CHECK (status IN ('ACCEPTED', 'REJECTED')),
    reasons           text[] NOT NULL DEFAULT '{}',
    payload           bytea NOT NULL,            -- the Bid message, serialised deterministically
    content_hash      text NOT NULL,             -- sha256 of payload
    -- Coverage: the interval-ending times the bid has period offers for (any product).
    first_interval    timestamp,
    last_interval     timestamp,
    covered_intervals timestamp[] NOT NULL DEFAULT '{}',
    received_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (unit_id, trading_day, dispatch_interval, version),
    CHECK (status = 'ACCEPTED' OR cardinality(reasons) > 0),
    CHECK (first_interval IS NULL OR first_interval <= last_interval)
);

CREATE INDEX bids_accepted_coverage ON bids (unit_id, dispatch_interval DESC, version DESC)
    WHERE status = 'ACCEPTED';

-- The market's ledger: each dispatch interval of a unit is cleared at most once (primary key), whether
-- by the bid submitted for it, by an older bid still covering it (catch-up), or by no bid at all
-- (bid_id NULL: dispatched 0). Revenue summed over this table is therefore never double counted.
CREATE TABLE cleared_intervals (
    unit_id             text NOT NULL,
    dispatch_interval   timestamp NOT NULL,
    bid_id              text REFERENCES bids (bid_id),
    gen_mw              double precision NOT NULL,
    load_mw             double precision NOT NULL,
    energy_revenue      double precision NOT NULL,   -- $
    fcas_revenue        double precision NOT NULL,   -- $
    state_of_charge_mwh double precision NOT NULL,   -- after the interval
    outcome             bytea NOT NULL,              -- the MarketOutcome message
    cleared_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (unit_id, dispatch_interval),
    UNIQUE (bid_id, dispatch_interval)
);

-- The outcomes of intervals cleared from a bid, by bid.
CREATE VIEW bid_outcomes AS
    SELECT bid_id, dispatch_interval, gen_mw, load_mw, energy_revenue, fcas_revenue,
           state_of_charge_mwh, outcome
    FROM cleared_intervals
    WHERE bid_id IS NOT NULL;

-- Accepted NEW submissions per unit and dispatch interval (a repeat is never a new row).
CREATE VIEW accepted_submissions AS
    SELECT unit_id, dispatch_interval, count(*) AS submissions
    FROM bids
    WHERE status = 'ACCEPTED'
    GROUP BY unit_id, dispatch_interval;

-- Physical state of each unit after its last cleared interval.
CREATE TABLE unit_state (
    unit_id               text PRIMARY KEY,
    state_of_charge_mwh   double precision NOT NULL,
    last_cleared_interval timestamp,                 -- NULL before the first clearing
    net_mw                double precision NOT NULL DEFAULT 0,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- One row per AutoBidder cycle (workflow), upserted as the cycle progresses.
CREATE TABLE cycles (
    cycle_id          text PRIMARY KEY,              -- workflow id
    unit_id           text NOT NULL,
    region            text NOT NULL,
    dispatch_interval timestamp NOT NULL,
    status            text NOT NULL,
    bid_id            text,
    failure           text,
    facts             jsonb NOT NULL DEFAULT '[]',
    started_at        timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cycles_unit_interval ON cycles (unit_id, dispatch_interval);
