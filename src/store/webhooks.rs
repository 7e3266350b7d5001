//! The webhook tables' SQL: endpoints, and the outbox of deliveries that the chunk transaction
//! finishing a scan fills ([`chunk_writes`](super::chunk_writes)) and the delivery worker
//! drains.
//!
//! Claims are safe with several instances: a claim locks due rows with `FOR UPDATE SKIP
//! LOCKED`, stamps them with a fresh `claim_id` and pushes `next_attempt_at` past the attempt's
//! time-out (the lease, by the database's clock). Another instance sees the row again only once
//! that lease ran out (the claiming instance died mid-attempt), and an outcome is recorded only
//! by the claim that still holds the row, so a late answer of a superseded attempt changes
//! nothing.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Pool, StoreError};
use crate::domain::audit::AuditEvent;
use crate::domain::TenantId;

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 3] = [
    "scan.completed",
    "scan.completed_with_errors",
    "scan.failed",
];

/// A registered endpoint. The signing secret is read only by the delivery worker.
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub tenant_id: TenantId,
    pub endpoint_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description_opt: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a registration stores.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub tenant_id: TenantId,
    pub endpoint_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description_opt: Option<String>,
    pub signing_secret: String,
}

/// A delivery as listed.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub tenant_id: TenantId,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub event: String,
    pub scan_id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub total_attempts: i32,
    pub redeliveries: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at_opt: Option<DateTime<Utc>>,
    pub last_status_code_opt: Option<i32>,
    pub last_error_opt: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at_opt: Option<DateTime<Utc>>,
}

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub tenant_id: TenantId,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub url: String,
    pub signing_secret: String,
    /// The exact bytes to send and sign.
    pub body: String,
    /// This attempt's number in its round (1 for the first).
    pub attempt: i32,
    pub claim_id: Uuid,
    /// How long the delivery has been due, in seconds (for the metric of waiting).
    pub due_for_secs: f64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered { status_code: i32 },
    /// Anything else: the status code if an answer came, and what went wrong.
    Refused {
        status_code_opt: Option<i32>,
        error: String,
    },
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Succeeded,
    RetryScheduled,
    Failed,
    /// The claim no longer held the row (its lease ran out and another attempt took it, a
    /// redelivery, or the endpoint was deleted): nothing changed.
    Superseded,
}

/// The due backlog, for the sampler's gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub due: i64,
    pub oldest_due_secs: f64,
}

/// The outcome of a redelivery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    Scheduled,
    AlreadyPending,
    NotFound,
}

const ENDPOINT_COLUMNS: &str = "tenant_id, endpoint_id, url, events, description, created_at";

const DELIVERY_COLUMNS: &str = "tenant_id, delivery_id, endpoint_id, event, scan_id, status, \
     attempts, total_attempts, redeliveries, next_attempt_at, last_attempt_at, last_status_code, \
     last_error, created_at, completed_at";

fn endpoint_from(row: &Row) -> EndpointRow {
    EndpointRow {
        tenant_id: TenantId(row.get("tenant_id")),
        endpoint_id: row.get("endpoint_id"),
        url: row.get("url"),
        events: row.get("events"),
        description_opt: row.get("description"),
        created_at: row.get("created_at"),
    }
}

fn delivery_from(row: &Row) -> DeliveryRow {
    DeliveryRow {
        tenant_id: TenantId(row.get("tenant_id")),
        delivery_id: row.get("delivery_id"),
        endpoint_id: row.get("endpoint_id"),
        event: row.get("event"),
        scan_id: row.get("scan_id"),
        status: row.get("status"),
        attempts: row.get("attempts"),
        total_attempts: row.get("total_attempts"),
        redeliveries: row.get("redeliveries"),
        next_attempt_at: row.get("next_attempt_at"),
        last_attempt_at_opt: row.get("last_attempt_at"),
        last_status_code_opt: row.get("last_status_code"),
        last_error_opt: row.get("last_error"),
        created_at: row.get("created_at"),
        completed_at_opt: row.get("completed_at"),
    }
}

/// Registers an endpoint with its audit entry, in one transaction; `None` if the tenant does
/// not exist.
pub async fn create_endpoint(
    pool: &Pool,
    endpoint: &NewEndpoint,
    event: &AuditEvent,
) -> Result<Option<EndpointRow>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let row_opt = transaction
        .query_opt(
            &format!(
                "INSERT INTO webhook_endpoints \
                     (tenant_id, endpoint_id, url, events, description, signing_secret) \
                 SELECT $1, $2, $3, $4, $5, $6 FROM tenants WHERE tenant_id = $1 \
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[
                &endpoint.tenant_id.0,
                &endpoint.endpoint_id,
                &endpoint.url,
                &endpoint.events,
                &endpoint.description_opt,
                &endpoint.signing_secret,
            ],
        )
        .await?;
    let Some(row) = row_opt else {
        return Ok(None);
    };
    super::audit_log::record(&transaction, event).await?;
    transaction.commit().await?;
    Ok(Some(endpoint_from(&row)))
}

/// A tenant's endpoints, oldest first.
pub async fn endpoints(pool: &Pool, tenant_id: TenantId) -> Result<Vec<EndpointRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 \
                 ORDER BY created_at, endpoint_id"
            ),
            &[&tenant_id.0],
        )
        .await?;
    Ok(rows.iter().map(endpoint_from).collect())
}

/// How many endpoints a tenant has.
pub async fn endpoint_count(pool: &Pool, tenant_id: TenantId) -> Result<i64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row = connection
        .query_one(
            "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1",
            &[&tenant_id.0],
        )
        .await?;
    Ok(row.get(0))
}

/// Deletes an endpoint and its deliveries, with the audit entry `make_event` builds from the
/// deleted row; `None` if the tenant has no such endpoint.
pub async fn delete_endpoint(
    pool: &Pool,
    tenant_id: TenantId,
    endpoint_id: Uuid,
    make_event: impl FnOnce(&EndpointRow) -> AuditEvent,
) -> Result<Option<EndpointRow>, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let row_opt = transaction
        .query_opt(
            &format!(
                "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 \
                 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[&tenant_id.0, &endpoint_id],
        )
        .await?;
    let Some(row) = row_opt else {
        return Ok(None);
    };
    let endpoint = endpoint_from(&row);
    super::audit_log::record(&transaction, &make_event(&endpoint)).await?;
    transaction.commit().await?;
    Ok(Some(endpoint))
}

/// A tenant's deliveries, newest first, optionally of one status.
pub async fn deliveries(
    pool: &Pool,
    tenant_id: TenantId,
    status_opt: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                 WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) \
                 ORDER BY created_at DESC, delivery_id LIMIT $3"
            ),
            &[&tenant_id.0, &status_opt, &limit],
        )
        .await?;
    Ok(rows.iter().map(delivery_from).collect())
}

/// Makes a delivery that is not pending due again at once, as a new round of attempts with the
/// same id, with its audit entry.
pub async fn redeliver(
    pool: &Pool,
    tenant_id: TenantId,
    delivery_id: Uuid,
    event: &AuditEvent,
) -> Result<Redelivery, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let status_opt: Option<String> = transaction
        .query_opt(
            "SELECT status FROM webhook_deliveries WHERE tenant_id = $1 AND delivery_id = $2 \
             FOR UPDATE",
            &[&tenant_id.0, &delivery_id],
        )
        .await?
        .map(|row| row.get(0));
    match status_opt.as_deref() {
        None => return Ok(Redelivery::NotFound),
        Some("pending") => return Ok(Redelivery::AlreadyPending),
        Some(_) => {}
    }
    transaction
        .execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                 redeliveries = redeliveries + 1, next_attempt_at = now(), claim_id = NULL, \
                 completed_at = NULL \
             WHERE tenant_id = $1 AND delivery_id = $2",
            &[&tenant_id.0, &delivery_id],
        )
        .await?;
    super::audit_log::record(&transaction, event).await?;
    transaction.commit().await?;
    Ok(Redelivery::Scheduled)
}

/// Claims up to `limit` due deliveries for one attempt each, oldest due first, at most
/// `per_endpoint` of one endpoint counting the `in_flight` ones this instance already sends
/// (pairs of endpoint id and count). Each claimed row's lease runs `lease_ms` from now.
pub async fn claim_due(
    pool: &Pool,
    limit: i64,
    per_endpoint: i64,
    in_flight: &[(Uuid, i64)],
    lease_ms: i64,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let busy_endpoints: Vec<Uuid> = in_flight.iter().map(|(endpoint, _)| *endpoint).collect();
    let busy_counts: Vec<i64> = in_flight.iter().map(|(_, count)| *count).collect();
    // The window picks each endpoint's oldest due rows among the first few thousand due; the
    // outer query locks them, skipping rows another instance is claiming at this moment.
    let rows = connection
        .query(
            "WITH busy AS (SELECT * FROM unnest($1::uuid[], $2::bigint[]) AS busy (endpoint_id, in_flight)), \
             due AS (SELECT tenant_id, delivery_id, endpoint_id, next_attempt_at FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT 5000), \
             placed AS (SELECT due.tenant_id, due.delivery_id, due.next_attempt_at, \
                     row_number() OVER (PARTITION BY due.endpoint_id ORDER BY due.next_attempt_at, due.delivery_id) \
                         + coalesce(busy.in_flight, 0) AS place \
                 FROM due LEFT JOIN busy USING (endpoint_id)), \
             chosen AS (SELECT delivery.tenant_id, delivery.delivery_id, \
                     extract(epoch FROM now() - delivery.next_attempt_at)::float8 AS due_for_secs \
                 FROM webhook_deliveries AS delivery \
                 JOIN placed USING (tenant_id, delivery_id) \
                 WHERE placed.place <= $3 AND delivery.status = 'pending' \
                     AND delivery.next_attempt_at <= now() \
                 ORDER BY placed.next_attempt_at LIMIT $4 \
                 FOR UPDATE OF delivery SKIP LOCKED) \
             UPDATE webhook_deliveries AS delivery SET attempts = delivery.attempts + 1, \
                 total_attempts = delivery.total_attempts + 1, claim_id = gen_random_uuid(), \
                 last_attempt_at = now(), \
                 next_attempt_at = now() + make_interval(secs => $5::double precision / 1000) \
             FROM chosen, webhook_endpoints AS endpoint \
             WHERE delivery.tenant_id = chosen.tenant_id AND delivery.delivery_id = chosen.delivery_id \
                 AND endpoint.tenant_id = delivery.tenant_id AND endpoint.endpoint_id = delivery.endpoint_id \
             RETURNING delivery.tenant_id, delivery.delivery_id, delivery.endpoint_id, endpoint.url, \
                 endpoint.signing_secret, delivery.payload::text AS body, delivery.attempts, \
                 delivery.claim_id, chosen.due_for_secs",
            &[&busy_endpoints, &busy_counts, &per_endpoint, &limit, &(lease_ms as f64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ClaimedDelivery {
            tenant_id: TenantId(row.get("tenant_id")),
            delivery_id: row.get("delivery_id"),
            endpoint_id: row.get("endpoint_id"),
            url: row.get("url"),
            signing_secret: row.get("signing_secret"),
            body: row.get("body"),
            attempt: row.get("attempts"),
            claim_id: row.get("claim_id"),
            due_for_secs: row.get::<_, f64>("due_for_secs").max(0.0),
        })
        .collect())
}

/// Records an attempt's outcome, if its claim still holds the row: delivered, failed for good
/// (after `max_attempts` in the round), or due again after `retry_delay_ms`. A final outcome
/// writes its audit entry in the same transaction.
pub async fn record_outcome(
    pool: &Pool,
    delivery: &ClaimedDelivery,
    outcome: &AttemptOutcome,
    max_attempts: i32,
    retry_delay_ms: i64,
) -> Result<Recorded, StoreError> {
    let (status_code_opt, error_opt) = match outcome {
        AttemptOutcome::Delivered { status_code } => (Some(*status_code), None),
        AttemptOutcome::Refused {
            status_code_opt,
            error,
        } => (*status_code_opt, Some(error.as_str())),
    };
    let recorded = match outcome {
        AttemptOutcome::Delivered { .. } => Recorded::Succeeded,
        AttemptOutcome::Refused { .. } if delivery.attempt >= max_attempts => Recorded::Failed,
        AttemptOutcome::Refused { .. } => Recorded::RetryScheduled,
    };
    let status = match recorded {
        Recorded::Succeeded => "succeeded",
        Recorded::Failed => "failed",
        _ => "pending",
    };
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    let updated = transaction
        .execute(
            "UPDATE webhook_deliveries SET status = $4, last_status_code = $5, last_error = $6, \
                 claim_id = NULL, \
                 next_attempt_at = CASE WHEN $4 = 'pending' \
                     THEN now() + make_interval(secs => $7::double precision / 1000) \
                     ELSE next_attempt_at END, \
                 completed_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END \
             WHERE tenant_id = $1 AND delivery_id = $2 AND claim_id = $3 AND status = 'pending'",
            &[
                &delivery.tenant_id.0,
                &delivery.delivery_id,
                &delivery.claim_id,
                &status,
                &status_code_opt,
                &error_opt,
                &(retry_delay_ms as f64),
            ],
        )
        .await?;
    if updated == 0 {
        return Ok(Recorded::Superseded);
    }
    if recorded != Recorded::RetryScheduled {
        let event = AuditEvent::webhook_outcome(
            delivery.tenant_id,
            delivery.delivery_id,
            recorded == Recorded::Succeeded,
            delivery.attempt,
            status_code_opt,
            error_opt,
        );
        super::audit_log::record(&transaction, &event).await?;
    }
    transaction.commit().await?;
    Ok(recorded)
}

/// How many deliveries are due now, and how long the oldest has been due.
pub async fn backlog(pool: &Pool) -> Result<Backlog, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row = connection
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 \
             FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()",
            &[],
        )
        .await?;
    Ok(Backlog {
        due: row.get(0),
        oldest_due_secs: row.get::<_, f64>(1).max(0.0),
    })
}

/// How many deliveries failed for good and were not redelivered.
pub async fn failed_count(pool: &Pool) -> Result<i64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row = connection
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
