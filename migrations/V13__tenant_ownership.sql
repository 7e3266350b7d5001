-- One owner per tenant (SPEC section 8). A tenant's actor (its queues, token bucket and
-- in-flight limit) runs only on the instance named here, and only while that instance's own
-- lease in engine_instances is live (the database's clock). The epoch grows at every change of
-- owner; a chunk transaction locks this row FOR SHARE and checks instance and epoch, so a
-- change of owner waits for the old owner's chunks in flight, and every later chunk of the old
-- owner is refused: an instance that lost a tenant writes nothing more for it.
CREATE TABLE tenant_owners (
    tenant_id   uuid        PRIMARY KEY REFERENCES tenants (tenant_id),
    instance_id text        NOT NULL,
    epoch       bigint      NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_owners_by_instance ON tenant_owners (instance_id);

-- What each owner wrote under each epoch: one row per (tenant, epoch, instance), inserted by
-- the first chunk that instance wrote for that tenant under that epoch (ON CONFLICT DO NOTHING,
-- so later chunks take no lock on it). With fencing there is one instance per epoch; the row
-- proves it, and its first_write_at measures a failover.
CREATE TABLE ownership_writes (
    tenant_id      uuid        NOT NULL,
    epoch          bigint      NOT NULL,
    instance_id    text        NOT NULL,
    first_write_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, epoch, instance_id)
);
