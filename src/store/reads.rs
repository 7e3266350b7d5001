//! Dashboard reads, on the read pool, each inside a transaction scoped to one tenant.
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

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::connections::ReadPool;
use super::StoreError;
use crate::domain::{PdplCategory, Region, TenantId};

/// How many activities a tenant has in each category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceSummary {
    pub total_activities: i64,
    /// Every category, in [`PdplCategory::ALL`] order, with zero counts included.
    pub categories: Vec<(PdplCategory, i64)>,
}

/// One stored processing activity.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub scan_id_opt: Option<Uuid>,
    pub record_index: i32,
    pub activity_name: String,
    pub pdpl_category: String,
    pub data_fields: Vec<String>,
    pub purpose_opt: Option<String>,
    pub legal_basis_opt: Option<String>,
    pub retention_period_opt: Option<String>,
    pub data_recipients_opt: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

/// Where a page of activities starts. Pages are in id order; ids are UUIDv7, so that is the
/// order records were accepted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// Skip this many activities. Cheap for small offsets only (the skipped index entries are
    /// still read), and stable only while new activities sort after the page: an activity
    /// accepted earlier but written later shifts the pages after it.
    Offset(i64),
    /// Keyset paging: the activities whose id is greater than this one. Stable under any
    /// concurrent write: no activity is returned twice, and none that existed when paging began
    /// is skipped, because ids never change and every page continues strictly after the last.
    After(Uuid),
}

/// A page of activities and where the next one starts.
#[derive(Debug, Clone)]
pub struct ActivityPage {
    pub activities: Vec<ActivityRow>,
    /// The id to continue after, or `None` when no activity followed this page when it was read.
    pub next_after_opt: Option<Uuid>,
}

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

/// A tenant's activities per category, from the counts the writers keep (migration V7).
pub async fn compliance_summary(
    pool: &ReadPool,
    tenant_id: TenantId,
) -> Result<ComplianceSummary, StoreError> {
    let mut connection = pool.get().await?;
    let transaction = begin_tenant_read(&mut connection, tenant_id).await?;
    let rows = transaction
        .query_typed(COMPLIANCE_SUMMARY_SQL, &[(&tenant_id.0, Type::UUID)])
        .await?;
    transaction.commit().await?;

    let mut categories: Vec<(PdplCategory, i64)> = PdplCategory::ALL
        .into_iter()
        .map(|category| (category, 0))
        .collect();
    for row in &rows {
        let text: &str = row.try_get("pdpl_category")?;
        let count: i64 = row.try_get("activities")?;
        // Only valid records are ever written (`domain/` decides), so another text is corruption.
        let category = PdplCategory::parse(text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown pdpl_category {text:?}")))?;
        if let Some(entry) = categories.iter_mut().find(|(known, _)| *known == category) {
            entry.1 = count;
        }
    }
    Ok(ComplianceSummary {
        total_activities: categories.iter().map(|(_, count)| count).sum(),
        categories,
    })
}

/// The columns [`ActivityRow::from_row`] reads.
macro_rules! activity_columns {
    () => {
        "id, tenant_id, scan_id, record_index, activity_name, pdpl_category, data_fields, \
         purpose, legal_basis, retention_period, data_recipients, created_at"
    };
}

/// The dashboard's statements, public so a test can check their plans under the reader role
/// (each must find a tenant's rows through an index condition on `tenant_id`).
pub const COMPLIANCE_SUMMARY_SQL: &str =
    "SELECT pdpl_category, activities FROM activity_counts WHERE tenant_id = $1";
pub const ACTIVITIES_BY_OFFSET_SQL: &str = concat!(
    "SELECT ",
    activity_columns!(),
    " FROM processing_activities WHERE tenant_id = $1 ORDER BY id OFFSET $2 LIMIT $3"
);
pub const ACTIVITIES_AFTER_SQL: &str = concat!(
    "SELECT ",
    activity_columns!(),
    " FROM processing_activities WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
);

/// One page of a tenant's activities in id order, at most `limit` long.
pub async fn activities_page(
    pool: &ReadPool,
    tenant_id: TenantId,
    start: PageStart,
    limit: i64,
) -> Result<ActivityPage, StoreError> {
    let mut connection = pool.get().await?;
    let transaction = begin_tenant_read(&mut connection, tenant_id).await?;
    // One row more than the page tells whether another page follows, without a second query.
    let fetch = limit + 1;
    let rows = match start {
        PageStart::Offset(skip) => {
            transaction
                .query_typed(
                    ACTIVITIES_BY_OFFSET_SQL,
                    &[
                        (&tenant_id.0, Type::UUID),
                        (&skip, Type::INT8),
                        (&fetch, Type::INT8),
                    ],
                )
                .await?
        }
        PageStart::After(after) => {
            transaction
                .query_typed(
                    ACTIVITIES_AFTER_SQL,
                    &[
                        (&tenant_id.0, Type::UUID),
                        (&after, Type::UUID),
                        (&fetch, Type::INT8),
                    ],
                )
                .await?
        }
    };
    transaction.commit().await?;

    let mut activities = rows
        .iter()
        .map(ActivityRow::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = activities.len() as i64 > limit;
    activities.truncate(limit.max(0) as usize);
    let next_after_opt = if more {
        activities.last().map(|activity| activity.id)
    } else {
        None
    };
    Ok(ActivityPage {
        activities,
        next_after_opt,
    })
}

/// One region of the operators' summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSummary {
    pub region: Region,
    pub tenants: i64,
    /// Every category, zeros included, in [`PdplCategory::ALL`] order.
    pub categories: Vec<(PdplCategory, i64)>,
}

/// Tenants and activities per category, per region (every region, zeros included): counts
/// only, read through `ingest_regional_summary()` (migration V9), which spans the tenants that
/// row-level security hides from the reader role.
pub async fn regional_summary(pool: &ReadPool) -> Result<Vec<RegionSummary>, StoreError> {
    let mut connection = pool.get().await?;
    let transaction = connection
        .build_transaction()
        .read_only(true)
        .start()
        .await?;
    let rows = transaction
        .query_typed(
            "SELECT region, tenants, pdpl_category, activities FROM ingest_regional_summary()",
            &[],
        )
        .await?;
    transaction.commit().await?;
    let mut summaries: Vec<RegionSummary> = Region::ALL
        .into_iter()
        .map(|region| RegionSummary {
            region,
            tenants: 0,
            categories: PdplCategory::ALL
                .into_iter()
                .map(|category| (category, 0))
                .collect(),
        })
        .collect();
    for row in &rows {
        let region = Region::of(row.try_get::<_, Option<&str>>("region")?);
        let summary = summaries
            .iter_mut()
            .find(|summary| summary.region == region)
            .ok_or_else(|| StoreError::Corrupt("a region outside Region::ALL".into()))?;
        summary.tenants = row.try_get("tenants")?;
        if let Some(text) = row.try_get::<_, Option<&str>>("pdpl_category")? {
            let category = PdplCategory::parse(text)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown pdpl_category {text:?}")))?;
            let activities: i64 = row.try_get("activities")?;
            if let Some(entry) = summary
                .categories
                .iter_mut()
                .find(|(known, _)| *known == category)
            {
                entry.1 = activities;
            }
        }
    }
    Ok(summaries)
}

/// One round trip on a read-pool connection; returns the role it reads as.
pub async fn ping(pool: &ReadPool) -> Result<String, StoreError> {
    let connection = pool.get().await?;
    let row = connection
        .query_typed_one("SELECT current_user::text", &[])
        .await?;
    Ok(row.try_get(0)?)
}

impl ActivityRow {
    fn from_row(row: &tokio_postgres::Row) -> Result<ActivityRow, StoreError> {
        Ok(ActivityRow {
            id: row.try_get("id")?,
            tenant_id: TenantId(row.try_get("tenant_id")?),
            scan_id_opt: row.try_get("scan_id")?,
            record_index: row.try_get("record_index")?,
            activity_name: row.try_get("activity_name")?,
            pdpl_category: row.try_get("pdpl_category")?,
            data_fields: row.try_get("data_fields")?,
            purpose_opt: row.try_get("purpose")?,
            legal_basis_opt: row.try_get("legal_basis")?,
            retention_period_opt: row.try_get("retention_period")?,
            data_recipients_opt: row.try_get("data_recipients")?,
            created_at: row.try_get("created_at")?,
        })
    }
}
