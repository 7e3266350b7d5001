-- Every admin action: who, what, when, and the state before and after.
CREATE TABLE admin_audit (
    audit_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor             text        NOT NULL,
    action            text        NOT NULL,
    target_tenant_id  uuid,
    target            text        NOT NULL,
    before            jsonb,
    after             jsonb,
    at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_audit_by_tenant ON admin_audit (target_tenant_id, at);

-- Keys are looked up by id on every request; the secret hash is compared by the engine.
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);
