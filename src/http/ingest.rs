//! The ingest routes: `POST /data-scans`, `GET /data-scans[/{id}]`,
//! `POST /batch/processing-activities`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::auth::{authenticate, authorized_tenant};
use super::headers::HeaderText;
use super::{
    admit, check_body_headers, close_connection_if, respond, ApiError, AppState, PendingBody, Query,
};
use crate::actors::messages::{BatchChunk, BatchChunkError, BatchSubmitted, ChunksStaged};
use crate::domain::audit::AuditEvent;
use crate::domain::client_text;
use crate::domain::{Priority, RecordError, ScanStatus, TenantId};
use crate::metrics::StageTimer;
use crate::store::audit_log;
use crate::store::chunk_writes::ChunkSource;
use crate::store::queries::{self, ScanRow};
use crate::store::staging::{self, NewScan, StagedScan};
use crate::submission::{self, parse_tenant_id, PreparedScan};

/// Default and largest page of `GET /data-scans`.
const SCAN_LIST_DEFAULT_LIMIT: i64 = 50;
const SCAN_LIST_MAX_LIMIT: i64 = 500;

pub async fn submit_scan(
    state: Arc<AppState>,
    authorization: HeaderText,
    body: PendingBody,
) -> Response {
    let mut waited = false;
    let result = submit_scan_inner(state, authorization, body, &mut waited).await;
    close_connection_if(waited, respond(count_rejection(result)))
}

/// Counts a refused submission by its error code (a fixed set).
fn count_rejection(result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    if let Err(error) = &result {
        metrics::counter!(crate::metrics::SUBMISSIONS_REJECTED, "reason" => error.code)
            .increment(1);
    }
    result
}

fn count_accepted(route: &'static str, valid: u64, invalid: u64) {
    metrics::counter!(crate::metrics::RECORDS_ACCEPTED, "route" => route).increment(valid);
    if invalid > 0 {
        metrics::counter!(crate::metrics::RECORDS_FAILED, "reason" => "invalid").increment(invalid);
    }
}

/// `waited` is set when the submission's body sat unread while it waited for admission.
async fn submit_scan_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    body: PendingBody,
    waited: &mut bool,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &authorization).await?;
    if !state.is_accepting() {
        return Err(ApiError::shutting_down());
    }
    let limit = state.settings.http.max_scan_body_bytes;
    check_body_headers(&body.content_type, &body.content_length, limit)?;
    let mut stages = StageTimer::submission("scan");
    // Held until the scan is staged: bounds the memory of scans in progress.
    // A refusal after the whole admission wait counts as waited.
    *waited = true;
    let admitted = admit(&state, body.declared_length_opt(), limit).await?;
    *waited = admitted.waited;
    stages.lap("admission_wait");
    let body = body.read(limit).await?;
    stages.lap("body_read");
    let (max_records, chunk_records) = (
        state.settings.ingest.max_scan_records,
        state.settings.ingest.chunk_records,
    );
    let prepared: PreparedScan =
        parse_off_request_threads(&state, "parsing the scan stopped unexpectedly", move || {
            submission::prepare_scan(&body, max_records, chunk_records)
        })
        .await??;
    stages.lap("parse_encode");
    principal.require_tenant(prepared.tenant_id)?;
    let valid_records: i64 = prepared
        .records
        .chunks
        .iter()
        .map(|chunk| chunk.record_count as i64)
        .sum();
    if state.engine.total_backlog() + valid_records
        > state.settings.ingest.max_total_backlog_records
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_saturated",
            "the engine's backlog is full; retry later",
            "hàng đợi của hệ thống đã đầy; vui lòng thử lại sau",
        )
        .with_retry_after(10));
    }

    let new_scan = NewScan {
        tenant_id: prepared.tenant_id,
        scan_id: prepared.scan_id,
        priority: prepared.priority,
        records_total: prepared.records.records_total as i32,
        records_failed: prepared.records.records_failed as i32,
        errors: serde_json::to_value(&prepared.records.errors).unwrap_or_default(),
        idempotency_key_opt: prepared.idempotency_key_opt,
        accepted_event: AuditEvent::scan_accepted(
            &principal,
            prepared.tenant_id,
            prepared.scan_id,
            prepared.records.records_total as i32,
            prepared.records.records_failed as i32,
            prepared.priority.as_str(),
        ),
        chunks: prepared.records.chunks,
    };
    let defaults = crate::actors::tenant_defaults(&state.settings);
    let staged = staging::stage_scan(&state.pool, &new_scan, defaults).await?;
    stages.lap("stage");
    let scan = match staged {
        StagedScan::New { scan, chunks } => {
            count_accepted("scan", valid_records as u64, new_scan.records_failed as u64);
            state.engine.chunks_staged(ChunksStaged {
                tenant_id: scan.tenant_id,
                chunks,
            });
            scan
        }
        StagedScan::Existing(scan) => scan,
        StagedScan::OverBacklog {
            backlog_records,
            max_backlog_records,
            retry_after_secs,
        } => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tenant_backlog_full",
                format!("the tenant has {backlog_records} records waiting (limit {max_backlog_records}); retry later"),
                format!("tổ chức đang có {backlog_records} bản ghi chờ ghi (giới hạn {max_backlog_records}); vui lòng thử lại sau"),
            )
            .with_details(json!({ "backlog_records": backlog_records, "max_backlog_records": max_backlog_records }))
            .with_retry_after(retry_after_secs))
        }
    };
    let body = json!({
        "scan_id": scan.scan_id,
        "tenant_id": scan.tenant_id,
        "status": scan.status.as_str(),
        "status_vi": scan.status.as_str_vi(),
        "priority": scan.priority.as_str(),
        "records_total": scan.records_total,
        "records_invalid": scan_invalid_at_submission(&scan),
        "errors": scan.errors,
        "status_url": format!("/data-scans/{}?tenant_id={}", scan.scan_id, scan.tenant_id),
    });
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED).into_response())
}

/// Records refused at submission are the scan's failures before any write.
fn scan_invalid_at_submission(scan: &ScanRow) -> i32 {
    if scan.status == ScanStatus::Pending {
        scan.records_failed
    } else {
        scan.errors.len() as i32
    }
}

pub async fn get_scan(
    scan_id_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Response {
    respond(get_scan_inner(state, authorization, scan_id_text, query).await)
}

async fn get_scan_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    scan_id_text: String,
    query: Query,
) -> Result<Response, ApiError> {
    let tenant_id = authorized_tenant(&state, &authorization, &query).await?;
    let scan_id = Uuid::parse_str(&scan_id_text).map_err(|_| {
        ApiError::bad_request(
            "invalid_scan_id",
            "scan_id must be a UUID",
            "scan_id phải là một UUID",
        )
    })?;
    let scan = queries::scan(&state.read_pool, tenant_id, scan_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(warp::reply::json(&scan_json(&scan)).into_response())
}

pub async fn list_scans(state: Arc<AppState>, authorization: HeaderText, query: Query) -> Response {
    respond(list_scans_inner(state, authorization, query).await)
}

async fn list_scans_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Result<Response, ApiError> {
    let tenant_id = authorized_tenant(&state, &authorization, &query).await?;
    let status_opt = match query.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(ScanStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status must be one of pending, processing, completed, completed_with_errors, failed",
                "status phải là một trong pending, processing, completed, completed_with_errors, failed",
            )
        })?),
    };
    let limit = match query.get("limit") {
        None => SCAN_LIST_DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=SCAN_LIST_MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {SCAN_LIST_MAX_LIMIT}"),
                    format!("limit phải là số nguyên từ 1 đến {SCAN_LIST_MAX_LIMIT}"),
                )
            })?,
    };
    let scans = queries::scans(&state.read_pool, tenant_id, status_opt, limit).await?;
    let body = json!({
        "tenant_id": tenant_id,
        "count": scans.len(),
        "scans": scans.iter().map(scan_json).collect::<Vec<_>>(),
    });
    Ok(warp::reply::json(&body).into_response())
}

fn scan_json(scan: &ScanRow) -> serde_json::Value {
    let accounted = scan.records_processed + scan.records_failed;
    let progress_percent = if scan.records_total > 0 {
        (accounted as f64 * 10_000.0 / scan.records_total as f64).round() / 100.0
    } else {
        100.0
    };
    let error_details = if scan.records_failed > 0 {
        json!({
            "records_failed": scan.records_failed,
            "errors_shown": scan.errors.len(),
            "message": format!("{} records failed; the first {} are listed in errors", scan.records_failed, scan.errors.len()),
            "message_vi": format!("{} bản ghi bị lỗi; {} lỗi đầu tiên được liệt kê trong errors", scan.records_failed, scan.errors.len()),
        })
    } else {
        serde_json::Value::Null
    };
    json!({
        "scan_id": scan.scan_id,
        "tenant_id": scan.tenant_id,
        "status": scan.status.as_str(),
        "status_vi": scan.status.as_str_vi(),
        "priority": scan.priority.as_str(),
        "progress_percent": progress_percent,
        "records_total": scan.records_total,
        "records_processed": scan.records_processed,
        "records_failed": scan.records_failed,
        "errors": scan.errors,
        "error_details": error_details,
        "created_at": scan.created_at,
        "started_at": scan.started_at_opt,
        "completed_at": scan.completed_at_opt,
    })
}

pub(super) fn tenant_from_query(query: &Query) -> Result<TenantId, ApiError> {
    let text = query.get("tenant_id").ok_or_else(|| {
        ApiError::bad_request(
            "missing_tenant_id",
            "the tenant_id query parameter is required",
            "tham số truy vấn tenant_id là bắt buộc",
        )
    })?;
    parse_tenant_id_param(text)
}

/// A `tenant_id` query parameter's value as a tenant id (400 otherwise).
pub(super) fn parse_tenant_id_param(text: &str) -> Result<TenantId, ApiError> {
    Ok(parse_tenant_id(text)?)
}

pub async fn submit_batch(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
    body: PendingBody,
) -> Response {
    let mut waited = false;
    let result = submit_batch_inner(state, authorization, query, body, &mut waited).await;
    close_connection_if(waited, respond(count_rejection(result)))
}

/// `waited` is set when the batch's body sat unread while it waited for admission.
async fn submit_batch_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
    body: PendingBody,
    waited: &mut bool,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let principal = authenticate(&state, &authorization).await?;
    if !state.is_accepting() {
        return Err(ApiError::shutting_down());
    }
    let tenant_id = tenant_from_query(&query)?;
    principal.require_tenant(tenant_id)?;
    let limit = state.settings.http.max_batch_body_bytes;
    check_body_headers(&body.content_type, &body.content_length, limit)?;
    let mut stages = StageTimer::submission("batch");
    // Held until the batch is committed: bounds the memory of batches in progress.
    // A refusal after the whole admission wait counts as waited.
    *waited = true;
    let admitted = admit(&state, body.declared_length_opt(), limit).await?;
    *waited = admitted.waited;
    stages.lap("admission_wait");
    let body = body.read(limit).await?;
    stages.lap("body_read");
    let (max_records, chunk_records) = (
        state.settings.ingest.max_batch_records,
        state.settings.ingest.chunk_records,
    );
    let encoded = parse_off_request_threads(
        &state,
        "parsing the batch stopped unexpectedly",
        move || submission::prepare_batch(&body, tenant_id, max_records, chunk_records),
    )
    .await??;
    stages.lap("parse_encode");

    // The tenant is registered (with default limits) before its actor reads them.
    let defaults = crate::actors::tenant_defaults(&state.settings);
    staging::tenant_limits(&state.pool, tenant_id, defaults).await?;

    let mut receivers = Vec::with_capacity(encoded.chunks.len());
    let mut chunks = Vec::with_capacity(encoded.chunks.len());
    for chunk in encoded.chunks {
        let (done, receiver) = oneshot::channel();
        receivers.push((chunk.record_count, receiver));
        chunks.push(BatchChunk {
            source: ChunkSource::Inline {
                payload: chunk.payload.into(),
                record_count: chunk.record_count,
            },
            priority: Priority::Standard,
            done,
        });
    }
    state
        .engine
        .batch_submitted(BatchSubmitted { tenant_id, chunks });

    let mut records_created: u64 = 0;
    let mut records_failed = encoded.records_failed as u64;
    let mut errors: Vec<RecordError> = encoded.errors;
    let mut unwritten: Vec<BatchChunkError> = Vec::new();
    for (record_count, receiver) in receivers {
        match receiver.await {
            Ok(Ok(outcome)) => {
                records_created += outcome.written;
                records_failed += outcome.dead_lettered;
            }
            Ok(Err(error)) => {
                records_failed += record_count as u64;
                metrics::counter!(crate::metrics::RECORDS_FAILED, "reason" => "unwritten")
                    .increment(record_count as u64);
                unwritten.push(error);
            }
            Err(_) => {
                records_failed += record_count as u64;
                unwritten.push(BatchChunkError::ShuttingDown);
            }
        }
    }
    stages.lap("write");
    if records_created == 0 && !unwritten.is_empty() {
        return Err(batch_refusal(unwritten.swap_remove(0)));
    }
    if !unwritten.is_empty() {
        errors.push(RecordError::new(
            0,
            "",
            format!(
                "{} chunks of this batch were not written: {}",
                unwritten.len(),
                client_text::shown(&unwritten[0].to_string(), client_text::MESSAGE_MAX_CHARS)
            ),
            format!(
                "{} phần của lô này chưa được ghi; hãy gửi lại các bản ghi đó",
                unwritten.len()
            ),
        ));
    }
    // A batch is not one transaction (each chunk commits on its own), so its entry is written
    // once every chunk has settled, before the 201. A crash in between leaves committed chunks
    // without an entry; the client, with no 201, retries the batch.
    let event = AuditEvent::batch_committed(
        &principal,
        tenant_id,
        uuid::Uuid::now_v7(),
        records_created,
        records_failed,
    );
    audit_log::record_alone(&state.pool, &event).await?;
    let success = unwritten.is_empty();
    let body = json!({
        "success": success,
        "success_vi": if success { "thành công" } else { "thành công một phần" },
        "records_created": records_created,
        "records_failed": records_failed,
        "errors": errors,
        "execution_time_seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "message": format!("{records_created} records created, {records_failed} failed"),
        "message_vi": format!("đã tạo {records_created} bản ghi, {records_failed} bản ghi lỗi"),
    });
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

fn batch_refusal(error: BatchChunkError) -> ApiError {
    match error {
        BatchChunkError::ShuttingDown => ApiError::shutting_down(),
        BatchChunkError::Throttled { retry_after_secs } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tenant_throttled",
            "the tenant's write rate would hold this batch too long; nothing was written, retry later",
            "giới hạn tốc độ ghi của tổ chức sẽ giữ lô này quá lâu; chưa có dữ liệu nào được ghi, vui lòng thử lại sau",
        )
        .with_retry_after(retry_after_secs),
        BatchChunkError::Database(error) => ApiError::from(error),
    }
}

/// Parsing and encoding a submission is CPU work: it runs on tokio's blocking pool, off the
/// request threads, and at most `state.parsing`'s permits (one per core) run at once. More
/// would only share the same cores, so every submission would finish later: with one per
/// core, submissions are parsed in arrival order and each is answered as soon as it can be.
async fn parse_off_request_threads<T: Send + 'static>(
    state: &AppState,
    failure: &'static str,
    parse: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = state
        .parsing
        .acquire()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|_| internal(failure))
}

fn internal(reason: &str) -> ApiError {
    tracing::error!(reason, "internal failure");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the request could not be processed; retry shortly",
        "không xử lý được yêu cầu; vui lòng thử lại sau",
    )
    .with_retry_after(1)
}
