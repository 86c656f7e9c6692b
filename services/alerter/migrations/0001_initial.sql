-- The alerter's state: alerts, their transitions, the delivery outbox, consumer offsets, silences.
-- Runs with search_path set to the store's schema; names are unqualified on purpose.

CREATE TABLE alerts (
    fingerprint text PRIMARY KEY,
    rule text NOT NULL,
    labels jsonb NOT NULL,
    state text NOT NULL CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
    severity text NOT NULL CHECK (severity IN ('info', 'ticket', 'page')),
    sequence integer NOT NULL CHECK (sequence >= 0),
    pending_since timestamptz,
    firing_since timestamptz,
    clear_since timestamptz,
    resolved_at timestamptz,
    evaluated_at timestamptz,
    summary text NOT NULL,
    figures jsonb NOT NULL,
    "window" text NOT NULL,  -- WINDOW is a reserved word: always quote this column
    latest_breached jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX alerts_state_rule ON alerts (state, rule);
CREATE INDEX alerts_labels ON alerts USING gin (labels jsonb_path_ops);

CREATE TABLE transitions (
    id uuid PRIMARY KEY,
    fingerprint text NOT NULL,
    sequence integer NOT NULL,
    to_state text NOT NULL,
    at timestamptz NOT NULL,
    silenced boolean NOT NULL DEFAULT false,
    body jsonb NOT NULL,
    UNIQUE (fingerprint, sequence)
);

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    transition_id uuid NOT NULL REFERENCES transitions (id) ON DELETE CASCADE,
    receiver text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    last_error text,
    last_status integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transition_id, receiver)
);

-- Claims scan only what is still to deliver; delivered rows drop out of the index.
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE consumer_offsets (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE silences (
    id uuid PRIMARY KEY,
    matchers jsonb NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    created_by text NOT NULL,
    comment text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expired_at timestamptz,
    CHECK (ends_at >= starts_at OR expired_at IS NOT NULL)
);

CREATE INDEX silences_ends_at ON silences (ends_at);
