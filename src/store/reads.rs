//! Dashboard reads run on the read pool, each inside a transaction scoped to one tenant.
//!
//! Every read opens a read-only transaction and names its tenant with
//! `SELECT set_config('app.tenant_id', $1, true)`. The read pool's connections act as the
//! `ingest_reader` role, whose row-level security policies (migration V3) compare each row's
//! `tenant_id` with that setting: a query here that forgot its `WHERE tenant_id = $1` would still
//! see only that tenant's rows, and a transaction that named no tenant sees none. The setting is
//! transaction-local (`true`), so it ends with the transaction and a pooled connection never
//! carries one tenant's scope into the next read.
//!
//! Queries still filter on `tenant_id` themselves: the filter states what the query means, and
//! the policy is the second, independent guard (SPEC section 5).
//!
//! Statements run with `query_typed`, which sends parameter types with the query and so needs no
//! separate prepare round trip: a read costs four round trips (begin, tenant, query, commit).

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use super::connections::ReadPool;
use super::StoreError;
use crate::domain::TenantId;

/// Opens a read-only transaction on a read-pool connection, scoped to `tenant_id`.
pub(crate) async fn begin_tenant_read(
    connection: &mut Client,
    tenant_id: TenantId,
) -> Result<Transaction<'_>, StoreError> {
    let transaction = connection
        .build_transaction()
        .read_only(true)
        .start()
        .await?;
    transaction
        .query_typed(
            "SELECT set_config('app.tenant_id', $1, true)",
            &[(&tenant_id.0.to_string(), Type::TEXT)],
        )
        .await?;
    Ok(transaction)
}

/// One round trip on a read-pool connection; returns the role it reads as.
pub async fn ping(pool: &ReadPool) -> Result<String, StoreError> {
    let connection = pool.get().await?;
    let row = connection
        .query_typed_one("SELECT current_user::text", &[])
        .await?;
    Ok(row.try_get(0)?)
}
