-- The promises view: the latest state of every promise on gapwatch.promises.v1, and its history.

CREATE TABLE promises (
    item_id text NOT NULL,
    promise_kind text NOT NULL,
    state text NOT NULL,
    segment jsonb NOT NULL,
    due_at timestamptz NOT NULL,
    changed_at timestamptz NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (item_id, promise_kind)
);

-- Lists filter on state and sort by due time (overdue-by, time left); labels go through GIN.
CREATE INDEX promises_by_state_due ON promises (state, due_at, item_id, promise_kind);
CREATE INDEX promises_by_segment ON promises USING gin (segment jsonb_path_ops);

CREATE TABLE promise_history (
    item_id text NOT NULL,
    promise_kind text NOT NULL,
    seq bigserial,
    state text NOT NULL,
    due_at timestamptz NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (item_id, promise_kind, seq)
);
