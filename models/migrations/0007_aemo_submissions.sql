-- Submissions to AEMO's bidding API (the bid service's "aemo" backend) and every answer AEMO gave.
-- A submission row is written (state SUBMITTING) and committed BEFORE the bid is sent, so a service restarted
-- after a crash or a time-out finds it and asks AEMO for its status by reference id instead of sending it
-- again. Market times are naive AEST, interval-ending; credentials are never stored.

CREATE TABLE aemo_submissions (
    reference_id      text PRIMARY KEY,            -- AEMO's referenceId: the idempotency key at AEMO
    bid_id            text NOT NULL UNIQUE,         -- the platform's bid id (services.bid_service.bid_id_for)
    unit_id           text NOT NULL,
    trading_day       date NOT NULL,
    dispatch_interval timestamp NOT NULL,           -- first interval of the bid
    version           integer NOT NULL CHECK (version >= 0),
    state             text NOT NULL CHECK (state IN ('SUBMITTING', 'RECEIVED', 'ACCEPTED', 'REJECTED',
                                                     'TIMED_OUT', 'UNREADABLE', 'UNAVAILABLE', 'REFUSED')),
    transaction_id    text,                         -- AEMO's transactionId of the submission
    reasons           text[] NOT NULL DEFAULT '{}', -- AEMO's reasons (REJECTED) or why the state is a failure
    payload           bytea NOT NULL,               -- the Bid message, serialised deterministically
    submission        jsonb NOT NULL,               -- the submitBids JSON as sent
    content_hash      text NOT NULL,                -- sha256 of the Bid message
    sends             integer NOT NULL DEFAULT 0 CHECK (sends >= 0),  -- times the JSON was POSTed
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'REJECTED' OR cardinality(reasons) > 0),
    CHECK (state <> 'ACCEPTED' OR transaction_id IS NOT NULL)
);
CREATE INDEX aemo_submissions_unit_interval ON aemo_submissions (unit_id, dispatch_interval);

CREATE TABLE aemo_exchanges (
    exchange_id  bigserial PRIMARY KEY,
    reference_id text NOT NULL REFERENCES aemo_submissions (reference_id),
    operation    text NOT NULL CHECK (operation IN ('submitBids', 'getSubmission')),
    at           timestamptz NOT NULL DEFAULT now(),
    http_status  integer,                           -- NULL when no answer came (time-out, unreachable)
    outcome      text NOT NULL,                     -- AEMO's status, or TIMED_OUT / UNREADABLE / UNAVAILABLE / REFUSED
    detail       text NOT NULL DEFAULT '',          -- reasons, or what went wrong
    answer       text                               -- AEMO's answer body as received (cut to 20,000 characters)
);
CREATE INDEX aemo_exchanges_reference ON aemo_exchanges (reference_id, exchange_id);
