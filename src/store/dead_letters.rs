//! Dead letters: records a permanent database error refused, kept with that error.
//!
//! A replay copies the stored tuple again in one transaction that also marks the dead letter
//! replayed, moves the record from its scan's failures to its processed records and counts it
//! in its tenant's category counts: it is
//! written once or not at all. A replay that fails again records the new error and counts the
//! attempt; nothing retries it on its own, so a poison record can never loop.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::audit_log;
use super::chunk_writes::{copy_again, count_again};
use super::{Pool, StoreError};
use crate::domain::audit::AuditEvent;
use crate::domain::auth::Principal;
use crate::domain::TenantId;

#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub dead_letter_id: i64,
    pub tenant_id: TenantId,
    pub scan_id_opt: Option<Uuid>,
    pub record_index: i32,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub replayed_at_opt: Option<DateTime<Utc>>,
}

/// Dead letters, newest first: one tenant's, or all.
pub async fn dead_letters(
    pool: &Pool,
    tenant_opt: Option<TenantId>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let tenant_uuid_opt = tenant_opt.map(|tenant| tenant.0);
    let rows = connection
        .query(
            "SELECT dead_letter_id, tenant_id, scan_id, record_index, error, attempts, created_at, replayed_at \
             FROM dead_letters WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY dead_letter_id DESC LIMIT $2",
            &[&tenant_uuid_opt, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DeadLetterRow {
            dead_letter_id: row.get("dead_letter_id"),
            tenant_id: TenantId(row.get("tenant_id")),
            scan_id_opt: row.get("scan_id"),
            record_index: row.get("record_index"),
            error: row.get("error"),
            attempts: row.get("attempts"),
            created_at: row.get("created_at"),
            replayed_at_opt: row.get("replayed_at"),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Written { tenant_id: TenantId },
    StillFailing { tenant_id: TenantId, error: String },
    AlreadyReplayed,
    NotFound,
}

pub async fn replay(
    pool: &Pool,
    actor: &Principal,
    dead_letter_id: i64,
) -> Result<ReplayOutcome, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let row_opt = transaction
        .query_opt(
            "SELECT tenant_id, scan_id, payload, replayed_at IS NOT NULL AS replayed \
             FROM dead_letters WHERE dead_letter_id = $1 FOR UPDATE",
            &[&dead_letter_id],
        )
        .await?;
    let Some(row) = row_opt else {
        return Ok(ReplayOutcome::NotFound);
    };
    if row.get::<_, bool>("replayed") {
        return Ok(ReplayOutcome::AlreadyReplayed);
    }
    let tenant_id = TenantId(row.get("tenant_id"));
    let scan_id_opt: Option<Uuid> = row.get("scan_id");
    let payload: &[u8] = row.get("payload");

    transaction.batch_execute("SAVEPOINT replay").await?;
    match copy_again(&transaction, payload).await {
        Ok(_) => {
            transaction
                .execute("UPDATE dead_letters SET replayed_at = now(), attempts = attempts + 1 WHERE dead_letter_id = $1", &[&dead_letter_id])
                .await?;
            if let Some(scan_id) = scan_id_opt {
                transaction
                    .execute(
                        "UPDATE scans SET records_processed = records_processed + 1, records_failed = records_failed - 1, \
                             status = CASE \
                                 WHEN records_processed + records_failed < records_total THEN status \
                                 WHEN records_failed - 1 > 0 THEN 'completed_with_errors' \
                                 ELSE 'completed' END \
                         WHERE tenant_id = $1 AND scan_id = $2",
                        &[&tenant_id.0, &scan_id],
                    )
                    .await?;
            }
            count_again(&transaction, tenant_id, payload).await?;
            let event = AuditEvent::dead_letter_replayed(actor, tenant_id, dead_letter_id, None);
            audit_log::record(&transaction, &event).await?;
            transaction.commit().await?;
            Ok(ReplayOutcome::Written { tenant_id })
        }
        Err(error) if error.is_retryable() => Err(error),
        Err(error) => {
            let message = error.database_message();
            transaction
                .batch_execute("ROLLBACK TO SAVEPOINT replay")
                .await?;
            transaction
                .execute(
                    "UPDATE dead_letters SET error = $2, attempts = attempts + 1 WHERE dead_letter_id = $1",
                    &[&dead_letter_id, &message],
                )
                .await?;
            let event =
                AuditEvent::dead_letter_replayed(actor, tenant_id, dead_letter_id, Some(&message));
            audit_log::record(&transaction, &event).await?;
            transaction.commit().await?;
            Ok(ReplayOutcome::StillFailing {
                tenant_id,
                error: message,
            })
        }
    }
}
