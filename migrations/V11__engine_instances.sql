-- Engine instances on this database (SPEC section 8): each live instance holds a row whose
-- lease it renews by heartbeat. Every time here is the database's clock (now()), never an
-- instance's, so instances with skewed clocks agree on who is alive.
CREATE TABLE engine_instances (
    instance_id      text        PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL,
    -- Where its HTTP API listens, for operators.
    http_address     text        NOT NULL DEFAULT ''
);
