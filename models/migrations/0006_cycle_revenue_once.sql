-- What each cycle's interval earned, counted once per unit and dispatch interval.
-- A cycle re-triggered for an interval that an earlier cycle already recorded reads the same market
-- outcome: it is kept (gen_mw ... fcas_revenue) but not counted again (revenue_counted false), so summing
-- the counted rows never double counts. Market times are naive AEST; revenue in $, MW, $/MWh.

ALTER TABLE cycles
    ADD COLUMN gen_mw          double precision,
    ADD COLUMN load_mw         double precision,
    ADD COLUMN price           double precision,              -- energy price of the interval, $/MWh
    ADD COLUMN energy_revenue  double precision,              -- $
    ADD COLUMN fcas_revenue    double precision,              -- $
    ADD COLUMN revenue_counted boolean NOT NULL DEFAULT false,
    ADD CHECK (NOT revenue_counted OR energy_revenue IS NOT NULL);

-- Cycles recorded before this migration: their outcome is the fact of stage "outcome".
UPDATE cycles c
SET gen_mw = (o.fact->>'gen_mw')::double precision,
    load_mw = (o.fact->>'load_mw')::double precision,
    price = (o.fact->>'price')::double precision,
    energy_revenue = (o.fact->>'energy_revenue_dollars')::double precision,
    fcas_revenue = (o.fact->>'fcas_revenue_dollars')::double precision
FROM (SELECT cycle_id, fact FROM cycles, jsonb_array_elements(facts) AS fact
      WHERE fact->>'stage' = 'outcome') AS o
WHERE c.cycle_id = o.cycle_id;

UPDATE cycles SET revenue_counted = true
WHERE cycle_id IN (SELECT DISTINCT ON (unit_id, dispatch_interval) cycle_id FROM cycles
                   WHERE energy_revenue IS NOT NULL
                   ORDER BY unit_id, dispatch_interval, started_at, cycle_id);

-- At most one cycle counts an interval's revenue.
CREATE UNIQUE INDEX cycles_revenue_counted_once ON cycles (unit_id, dispatch_interval) WHERE revenue_counted;
