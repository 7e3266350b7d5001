//! Tenant ownership's SQL (migration V13): claims, hand-overs, the fence every chunk
//! transaction runs, and the reads the ownership pass needs.
//!
//! An owner is valid while its instance's lease in `engine_instances` is live, judged by the
//! database's clock. Every change of owner bumps the epoch, and the row is never deleted (a
//! released tenant is owned by the empty instance id), so an epoch names one owner forever.

use uuid::Uuid;

use super::{Pool, StoreError};
use crate::domain::TenantId;

/// The fence of a chunk transaction: `$1` tenant, `$2` this instance, `$3` the epoch its actor
/// was given. One row (`owned` true) when this instance still owns the tenant under that epoch
/// and its own lease is live; the owner row is then locked `FOR SHARE` until the chunk commits,
/// so a change of owner waits for it. No row: fenced, write nothing.
pub const FENCE: &str = "SELECT true AS owned FROM tenant_owners AS owner \
     JOIN engine_instances AS instance ON instance.instance_id = owner.instance_id \
     WHERE owner.tenant_id = $1 AND owner.instance_id = $2 AND owner.epoch = $3 \
         AND instance.lease_expires_at > now() \
     FOR SHARE OF owner";

/// [`FENCE`], and the (tenant, epoch, instance) trace in `ownership_writes` when it passes.
/// A tenant's actor sends its chunks with this one until one of them has committed under its
/// epoch: a trace per epoch is all that is needed, and a conflicting insert on every chunk
/// would cost each of them an index probe for nothing.
pub const FENCE_AND_TRACE: &str = "WITH fence AS (SELECT owner.epoch FROM tenant_owners AS owner \
         JOIN engine_instances AS instance ON instance.instance_id = owner.instance_id \
         WHERE owner.tenant_id = $1 AND owner.instance_id = $2 AND owner.epoch = $3 \
             AND instance.lease_expires_at > now() \
         FOR SHARE OF owner), \
     traced AS (INSERT INTO ownership_writes (tenant_id, epoch, instance_id) \
         SELECT $1, epoch, $2 FROM fence ON CONFLICT DO NOTHING) \
     SELECT true AS owned FROM fence";

/// How long a claim or hand-over waits for the row lock of chunks in flight before trying
/// again at the next pass (an old owner's transaction that hangs must not stall this one).
const OWNERSHIP_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '250ms'";

/// Ids of the instances whose lease is live, sorted.
pub async fn live_instances(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            "SELECT instance_id FROM engine_instances WHERE lease_expires_at > now() \
             ORDER BY instance_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Tenants with staged work.
pub async fn tenants_with_work(pool: &Pool) -> Result<Vec<TenantId>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query("SELECT DISTINCT tenant_id FROM staged_chunks", &[])
        .await?;
    Ok(rows.iter().map(|row| TenantId(row.get(0))).collect())
}

/// Takes every tenant of `tenants` that nobody owns or whose owner's lease ran out, and
/// returns every tenant `instance_id` owns afterwards, with its epoch. A tenant whose row is
/// locked by chunks in flight is left for the next pass.
pub async fn claim(
    pool: &Pool,
    instance_id: &str,
    tenants: &[TenantId],
) -> Result<Vec<(TenantId, i64)>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|tenant| tenant.0).collect();
    if !tenant_ids.is_empty() {
        let transaction = connection.transaction().await?;
        transaction.batch_execute(OWNERSHIP_LOCK_TIMEOUT).await?;
        // Lock what can be taken without waiting, in a fixed order (no deadlock between two
        // claiming instances), then take it.
        let claimed = transaction
            .execute(
                "WITH wanted AS (SELECT tenant_id FROM unnest($1::uuid[]) AS wanted (tenant_id) \
                     JOIN tenants USING (tenant_id)), \
                 fresh AS (INSERT INTO tenant_owners (tenant_id, instance_id, epoch) \
                     SELECT tenant_id, $2, 1 FROM wanted ORDER BY tenant_id \
                     ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id), \
                 orphaned AS (SELECT owner.tenant_id FROM tenant_owners AS owner \
                     JOIN wanted USING (tenant_id) \
                     WHERE owner.instance_id <> $2 AND NOT EXISTS (SELECT 1 FROM engine_instances AS instance \
                         WHERE instance.instance_id = owner.instance_id AND instance.lease_expires_at > now()) \
                     ORDER BY owner.tenant_id FOR UPDATE OF owner SKIP LOCKED) \
                 UPDATE tenant_owners AS owner SET instance_id = $2, epoch = owner.epoch + 1, \
                     acquired_at = now() \
                 FROM orphaned WHERE owner.tenant_id = orphaned.tenant_id",
                &[&tenant_ids, &instance_id],
            )
            .await;
        match claimed {
            Ok(_) => transaction.commit().await?,
            // Another instance's chunk holds a row: try again at the next pass.
            Err(error) if error.code().map(|code| code.code()) == Some("55P03") => {
                drop(transaction);
            }
            Err(error) => return Err(error.into()),
        }
    }
    owned_by(&**connection, instance_id).await
}

async fn owned_by(
    client: &impl tokio_postgres::GenericClient,
    instance_id: &str,
) -> Result<Vec<(TenantId, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT tenant_id, epoch FROM tenant_owners WHERE instance_id = $1",
            &[&instance_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (TenantId(row.get(0)), row.get(1)))
        .collect())
}

/// Hands tenants owned by `from` to `to` (a live instance that prefers them, or the empty id at
/// shutdown): a new epoch each. Waits at most a moment for chunks in flight; returns the
/// tenants handed over.
pub async fn hand_over(
    pool: &Pool,
    from: &str,
    to: &str,
    tenants: &[TenantId],
) -> Result<Vec<TenantId>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    transaction.batch_execute(OWNERSHIP_LOCK_TIMEOUT).await?;
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|tenant| tenant.0).collect();
    let rows = transaction
        .query(
            "UPDATE tenant_owners SET instance_id = $3, epoch = epoch + 1, acquired_at = now() \
             WHERE tenant_id = ANY ($1::uuid[]) AND instance_id = $2 RETURNING tenant_id",
            &[&tenant_ids, &from, &to],
        )
        .await;
    match rows {
        Ok(rows) => {
            transaction.commit().await?;
            Ok(rows.iter().map(|row| TenantId(row.get(0))).collect())
        }
        Err(error) if error.code().map(|code| code.code()) == Some("55P03") => Ok(Vec::new()),
        Err(error) => Err(error.into()),
    }
}

/// At shutdown, once the writes are done and the heartbeat stopped: hands back every tenant
/// `instance_id` owns (a new epoch, no owner), deletes its lease and tells the other
/// instances, in one transaction, so they take the tenants at once (their next pass no longer
/// sees this instance alive). Returns the tenants handed back.
pub async fn leave(pool: &Pool, instance_id: &str) -> Result<u64, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let released = transaction
        .execute(
            "UPDATE tenant_owners SET instance_id = '', epoch = epoch + 1, acquired_at = now() \
             WHERE instance_id = $1",
            &[&instance_id],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM engine_instances WHERE instance_id = $1",
            &[&instance_id],
        )
        .await?;
    transaction.batch_execute(NOTIFY_MEMBERSHIP).await?;
    transaction.commit().await?;
    Ok(released)
}

/// Tells every instance that the instances changed (one joined, or one handed its tenants
/// back): each runs its ownership pass at once.
pub async fn announce_membership(pool: &Pool) -> Result<(), StoreError> {
    let connection = super::connections::checkout(pool).await?;
    connection.batch_execute(NOTIFY_MEMBERSHIP).await?;
    Ok(())
}

/// The live owner of a tenant, if any: its instance id and HTTP address.
pub async fn live_owner(
    pool: &Pool,
    tenant_id: TenantId,
) -> Result<Option<(String, String, i64)>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row_opt = connection
        .query_opt(
            "SELECT owner.instance_id, instance.http_address, owner.epoch \
             FROM tenant_owners AS owner JOIN engine_instances AS instance USING (instance_id) \
             WHERE owner.tenant_id = $1 AND instance.lease_expires_at > now()",
            &[&tenant_id.0],
        )
        .await?;
    Ok(row_opt.map(|row| (row.get(0), row.get(1), row.get(2))))
}

/// Tenants owned per live instance (for `GET /admin/cluster`).
pub async fn owned_counts(pool: &Pool) -> Result<Vec<(String, i64)>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            "SELECT instance_id, count(*) FROM tenant_owners WHERE instance_id <> '' \
             GROUP BY instance_id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Tells every instance that a tenant has new work or new limits (delivered at commit when
/// run inside a transaction).
pub const NOTIFY_TENANT: &str = "SELECT pg_notify('ingest_tenant', $1::text)";

/// The channel instances listen on: a tenant id, or [`MEMBERSHIP`].
pub const TENANT_CHANNEL: &str = "ingest_tenant";

/// The payload that says the instances changed.
pub const MEMBERSHIP: &str = "membership";

const NOTIFY_MEMBERSHIP: &str = "SELECT pg_notify('ingest_tenant', 'membership')";
