//! Tenants and API keys.
//!
//! Every change an admin makes is written in the same transaction as its audit entry
//! ([`audit_log::record`]), so the log never misses an action and never records one that did
//! not happen.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::staging::{TenantDefaults, TenantLimits};
use super::{audit_log, Pool, StoreError};
use crate::domain::audit::{AuditAction, AuditEvent};
use crate::domain::auth::{Principal, Scope};
use crate::domain::{Region, TenantId};

/// A tenant as stored, with its backlog of staged records.
#[derive(Debug, Clone)]
pub struct TenantRow {
    pub tenant_id: TenantId,
    pub name: String,
    pub region_opt: Option<String>,
    pub limits: TenantLimits,
    pub backlog_records: i64,
    pub created_at: DateTime<Utc>,
}

impl TenantRow {
    fn audit_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "region": self.region_opt,
            "records_per_second": self.limits.records_per_second,
            "burst": self.limits.burst,
            "max_backlog_records": self.limits.max_backlog_records,
            "paused": self.limits.paused,
        })
    }
}

const TENANT_COLUMNS: &str = "t.tenant_id, t.name, t.region, t.records_per_second, t.burst, t.max_backlog_records, \
     t.paused, t.created_at, \
     (SELECT coalesce(sum(record_count), 0)::bigint FROM staged_chunks s WHERE s.tenant_id = t.tenant_id) AS backlog_records";

fn tenant_from_row(row: &tokio_postgres::Row) -> Result<TenantRow, StoreError> {
    Ok(TenantRow {
        tenant_id: TenantId(row.try_get("tenant_id")?),
        name: row.try_get("name")?,
        region_opt: row.try_get("region")?,
        limits: TenantLimits {
            records_per_second: row.try_get("records_per_second")?,
            burst: row.try_get("burst")?,
            max_backlog_records: row.try_get("max_backlog_records")?,
            paused: row.try_get("paused")?,
            region: Region::of(row.try_get("region")?),
        },
        backlog_records: row.try_get("backlog_records")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A tenant to create; absent limits take the defaults.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub region_opt: Option<String>,
    pub records_per_second_opt: Option<i64>,
    pub burst_opt: Option<i64>,
    pub max_backlog_records_opt: Option<i64>,
}

/// Creates a tenant; `None` if the id is taken.
pub async fn create_tenant(
    pool: &Pool,
    actor: &Principal,
    new_tenant: &NewTenant,
    defaults: TenantDefaults,
) -> Result<Option<TenantRow>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let inserted = transaction
        .execute(
            "INSERT INTO tenants (tenant_id, name, region, records_per_second, burst, max_backlog_records) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO NOTHING",
            &[
                &new_tenant.tenant_id.0,
                &new_tenant.name,
                &new_tenant.region_opt,
                &new_tenant.records_per_second_opt.unwrap_or(defaults.records_per_second),
                &new_tenant.burst_opt.unwrap_or(defaults.burst),
                &new_tenant.max_backlog_records_opt.unwrap_or(defaults.max_backlog_records),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    let tenant = select_tenant(&transaction, new_tenant.tenant_id, false)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt("a tenant vanished inside its own transaction".into())
        })?;
    let event = AuditEvent::tenant_changed(
        actor,
        AuditAction::TenantCreated,
        tenant.tenant_id,
        None,
        tenant.audit_json(),
    );
    audit_log::record(&transaction, &event).await?;
    transaction.commit().await?;
    Ok(Some(tenant))
}

pub async fn tenants(pool: &Pool, limit: i64) -> Result<Vec<TenantRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants t ORDER BY t.created_at, t.tenant_id LIMIT $1"),
            &[&limit],
        )
        .await?;
    rows.iter().map(tenant_from_row).collect()
}

pub async fn tenant(pool: &Pool, tenant_id: TenantId) -> Result<Option<TenantRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    select_tenant(&**connection, tenant_id, false).await
}

async fn select_tenant(
    client: &impl tokio_postgres::GenericClient,
    tenant_id: TenantId,
    for_update: bool,
) -> Result<Option<TenantRow>, StoreError> {
    let lock = if for_update {
        " FOR NO KEY UPDATE OF t"
    } else {
        ""
    };
    let row_opt = client
        .query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.tenant_id = $1{lock}"),
            &[&tenant_id.0],
        )
        .await?;
    row_opt.map(|row| tenant_from_row(&row)).transpose()
}

/// A change to a tenant's write settings; absent fields keep their value.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsChange {
    pub records_per_second_opt: Option<i64>,
    pub burst_opt: Option<i64>,
    pub max_backlog_records_opt: Option<i64>,
    pub paused_opt: Option<bool>,
}

/// Applies `change`; `None` if the tenant does not exist.
pub async fn change_limits(
    pool: &Pool,
    actor: &Principal,
    tenant_id: TenantId,
    action: AuditAction,
    change: LimitsChange,
) -> Result<Option<TenantRow>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let Some(before) = select_tenant(&transaction, tenant_id, true).await? else {
        return Ok(None);
    };
    transaction
        .execute(
            "UPDATE tenants SET records_per_second = coalesce($2, records_per_second), \
                 burst = coalesce($3, burst), max_backlog_records = coalesce($4, max_backlog_records), \
                 paused = coalesce($5, paused), updated_at = now() \
             WHERE tenant_id = $1",
            &[
                &tenant_id.0,
                &change.records_per_second_opt,
                &change.burst_opt,
                &change.max_backlog_records_opt,
                &change.paused_opt,
            ],
        )
        .await?;
    let after = select_tenant(&transaction, tenant_id, false)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt("a tenant vanished inside its own transaction".into())
        })?;
    let event = AuditEvent::tenant_changed(
        actor,
        action,
        tenant_id,
        Some(before.audit_json()),
        after.audit_json(),
    );
    audit_log::record(&transaction, &event).await?;
    // The tenant's owner, on whichever instance, applies the change at the commit.
    transaction
        .execute(super::ownership::NOTIFY_TENANT, &[&tenant_id.0.to_string()])
        .await?;
    transaction.commit().await?;
    Ok(Some(after))
}

/// The stored limits of these tenants (the sweep refreshes active tenant actors with them).
pub async fn limits_of(
    pool: &Pool,
    tenant_ids: &[TenantId],
) -> Result<Vec<(TenantId, TenantLimits)>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let ids: Vec<Uuid> = tenant_ids.iter().map(|tenant| tenant.0).collect();
    let rows = connection
        .query(
            "SELECT tenant_id, records_per_second, burst, max_backlog_records, paused, region FROM tenants WHERE tenant_id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                TenantId(row.get("tenant_id")),
                TenantLimits {
                    records_per_second: row.get("records_per_second"),
                    burst: row.get("burst"),
                    max_backlog_records: row.get("max_backlog_records"),
                    paused: row.get("paused"),
                    region: Region::of(row.get("region")),
                },
            )
        })
        .collect())
}

/// A stored key, for authentication.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub scope: Scope,
    pub secret_hash: Vec<u8>,
}

/// The unrevoked key with this id.
pub async fn active_key(pool: &Pool, key_id: Uuid) -> Result<Option<StoredKey>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row_opt = connection
        .query_opt(
            "SELECT scope, tenant_id, secret_hash FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
            &[&key_id],
        )
        .await?;
    let Some(row) = row_opt else {
        return Ok(None);
    };
    let scope = match (
        row.get::<_, &str>("scope"),
        row.get::<_, Option<Uuid>>("tenant_id"),
    ) {
        ("admin", _) => Scope::Admin,
        ("service", _) => Scope::Service,
        ("tenant", Some(tenant)) => Scope::Tenant(TenantId(tenant)),
        (other, _) => return Err(StoreError::Corrupt(format!("api key with scope {other:?}"))),
    };
    Ok(Some(StoredKey {
        scope,
        secret_hash: row.get("secret_hash"),
    }))
}

/// Stores a minted key. Fails with a foreign-key error if a tenant scope names no tenant.
pub async fn insert_key(
    pool: &Pool,
    actor: &Principal,
    key_id: Uuid,
    secret_hash: &[u8; 32],
    scope: Scope,
    name: &str,
) -> Result<bool, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let tenant_opt = match scope {
        Scope::Tenant(tenant) => Some(tenant),
        _ => None,
    };
    if let Some(tenant) = tenant_opt {
        if select_tenant(&transaction, tenant, false).await?.is_none() {
            return Ok(false);
        }
    }
    transaction
        .execute(
            "INSERT INTO api_keys (key_id, secret_hash, scope, tenant_id, name) VALUES ($1, $2, $3, $4, $5)",
            &[&key_id, &secret_hash.as_slice(), &scope.name(), &tenant_opt.map(|tenant| tenant.0), &name],
        )
        .await?;
    let after = json!({ "scope": scope.name(), "tenant_id": tenant_opt, "name": name });
    audit_log::record(
        &transaction,
        &AuditEvent::key_minted(actor, key_id, tenant_opt, after),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Revokes a key; `false` if no unrevoked key has this id.
pub async fn revoke_key(pool: &Pool, actor: &Principal, key_id: Uuid) -> Result<bool, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let row_opt = transaction
        .query_opt(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL RETURNING scope, tenant_id, name",
            &[&key_id],
        )
        .await?;
    let Some(row) = row_opt else {
        return Ok(false);
    };
    let tenant_opt: Option<Uuid> = row.get("tenant_id");
    let before = json!({ "scope": row.get::<_, &str>("scope"), "tenant_id": tenant_opt, "name": row.get::<_, &str>("name"), "revoked": false });
    let event = AuditEvent::key_revoked(actor, key_id, tenant_opt.map(TenantId), before);
    audit_log::record(&transaction, &event).await?;
    transaction.commit().await?;
    Ok(true)
}
