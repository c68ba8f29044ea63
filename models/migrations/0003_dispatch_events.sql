-- VPP dispatch events and their impact log: what each site was asked, acknowledged and delivered.
-- Times are timestamptz (wall clock); energy kWh per site, MWh per event; power MW.

CREATE TABLE dispatch_events (
    event_id      text PRIMARY KEY,
    node_id       text NOT NULL,
    target_mw     double precision NOT NULL CHECK (target_mw > '-Infinity' AND target_mw < 'Infinity'),
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    status        text NOT NULL CHECK (status IN ('COMPLETED', 'CANCELLED')),
    reason        text NOT NULL DEFAULT '',
    site_count    integer NOT NULL CHECK (site_count >= 0),
    asked_mwh     double precision NOT NULL,
    delivered_mwh double precision NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (window_end > window_start)
);

-- One row per site of an event (the impact log operators and site owners read).
CREATE TABLE dispatch_site_impact (
    event_id              text NOT NULL REFERENCES dispatch_events (event_id) ON DELETE CASCADE,
    site_id               text NOT NULL,
    asked_kwh             double precision NOT NULL,
    delivered_kwh         double precision NOT NULL,
    shortfall_kwh         double precision NOT NULL CHECK (shortfall_kwh >= 0),
    acknowledged          boolean NOT NULL,
    first_acknowledged_at timestamptz,
    PRIMARY KEY (event_id, site_id)
);

CREATE INDEX dispatch_site_impact_by_site ON dispatch_site_impact (site_id, event_id);
