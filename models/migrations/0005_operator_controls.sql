-- Operator controls of AutoBidder units and their audit trail.
-- unit_controls: one row per unit, what the cycle honours (absent row = no controls in force).
-- operator_actions: append-only audit trail of every accepted operator action and its effects.
-- Times are timestamptz (wall clock); SoC floor as a fraction of the unit's energy capacity.

CREATE TABLE unit_controls (
    unit_id              text PRIMARY KEY,
    paused               boolean NOT NULL DEFAULT false,
    paused_reason        text,
    soc_floor_fraction   double precision CHECK (soc_floor_fraction >= 0 AND soc_floor_fraction <= 1),
    soc_floor_until      timestamptz,
    pending_rebid_reason text,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((soc_floor_fraction IS NULL) = (soc_floor_until IS NULL))
);

CREATE TABLE operator_actions (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unit_id  text NOT NULL,
    action   text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb,
    operator text NOT NULL DEFAULT '',
    reason   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX operator_actions_by_unit ON operator_actions (unit_id, at DESC, id DESC);

-- The audit trail is append-only.
CREATE FUNCTION operator_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_actions is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER operator_actions_no_change BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION operator_actions_append_only();
