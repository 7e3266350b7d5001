-- Scan notifications (SPEC section 9): a tenant's webhook endpoints, and an outbox of
-- deliveries. A delivery row is inserted by the transaction of the chunk that finishes its scan
-- (one per endpoint whose events match), so a finished scan is never left unannounced and an
-- unfinished one never announced; a delivery worker on any instance claims due rows with
-- FOR UPDATE SKIP LOCKED and leases them by the database's clock.
CREATE TABLE webhook_endpoints (
    tenant_id      uuid        NOT NULL REFERENCES tenants (tenant_id),
    endpoint_id    uuid        NOT NULL,
    url            text        NOT NULL,
    -- A subset of scan.completed, scan.completed_with_errors, scan.failed.
    events         text[]      NOT NULL,
    description    text,
    -- whsec_<base64>: shown once at registration, never again through the API; the engine
    -- reads it to sign each attempt.
    signing_secret text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, endpoint_id)
);

CREATE TABLE webhook_deliveries (
    tenant_id        uuid        NOT NULL,
    -- Also the webhook-id header: stable across retries and redeliveries.
    delivery_id      uuid        NOT NULL,
    endpoint_id      uuid        NOT NULL,
    event            text        NOT NULL,
    scan_id          uuid        NOT NULL,
    -- The body, fixed when the scan finished: every attempt sends the same bytes.
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Attempts in the current round (a redelivery starts a new round).
    attempts         integer     NOT NULL DEFAULT 0,
    total_attempts   integer     NOT NULL DEFAULT 0,
    redeliveries     integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due; while an attempt runs, the end of its lease (a claim sets
    -- it past the attempt's time-out, so a killed instance's attempt becomes due again).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by each claim; an outcome is recorded only by the claim that still holds the row.
    claim_id         uuid,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, delivery_id),
    FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, endpoint_id) ON DELETE CASCADE
);

-- What the delivery worker claims: due pending rows, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- A tenant's deliveries, newest first, by status.
CREATE INDEX webhook_deliveries_by_tenant
    ON webhook_deliveries (tenant_id, status, created_at DESC);
-- The failed deliveries, counted by the sampler.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (tenant_id) WHERE status = 'failed';
-- The cascade from an endpoint.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (tenant_id, endpoint_id);
