//! The ingest routes: `POST /data-scans`, `GET /data-scans[/{id}]`,
//! `POST /batch/processing-activities`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::admission::staging_charge_kib;
use super::auth::{authenticate, authorized_tenant};
use super::error::ErrorBody;
use super::headers::HeaderText;
use super::openapi::{Activity, PriorityName, ScanStatusName};
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
use crate::store::StoreError;
use crate::submission::{self, parse_tenant_id, PreparedScan};

/// `POST /data-scans` body, as the submission parser (`submission/`) reads it.
#[derive(ToSchema)]
#[schema(
    description = "A scan: up to `ingest.max_scan_records` records (100,000 by default) for \
                        one tenant. Invalid records are counted and reported, not rejected with \
                        the scan. — Một lần quét: tối đa `ingest.max_scan_records` bản ghi (mặc \
                        định 100.000) cho một tổ chức. Bản ghi không hợp lệ được đếm và báo lại, \
                        không làm từ chối cả lần quét."
)]
#[allow(dead_code)]
pub struct ScanSubmission {
    tenant_id: Uuid,
    #[schema(min_items = 1, max_items = 100_000)]
    activities: Vec<Activity>,
    /// Default `standard`.
    #[schema(value_type = Option<PriorityName>)]
    priority: Option<String>,
    /// The same key for the same tenant within 24 hours returns the first scan: at most 255
    /// bytes of UTF-8, without U+0000.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")]
    idempotency_key: Option<String>,
}

/// `POST /batch/processing-activities` body, as the submission parser reads it.
#[derive(ToSchema)]
#[schema(
    description = "A synchronous batch: up to `ingest.max_batch_records` records (10,000 \
                        by default). — Một lô đồng bộ: tối đa `ingest.max_batch_records` bản ghi \
                        (mặc định 10.000)."
)]
#[allow(dead_code)]
pub struct BatchSubmission {
    #[schema(min_items = 1, max_items = 10_000)]
    activities: Vec<Activity>,
}

/// One refused record of a submission.
#[derive(ToSchema)]
#[schema(as = RecordError)]
#[allow(dead_code)]
pub struct RecordErrorBody {
    /// The record's index in `activities` (0 for an error about the whole batch).
    index: u64,
    /// The field at fault, or empty.
    field: String,
    error: String,
    error_vi: String,
}

/// `202` to `POST /data-scans`: the scan is committed.
#[derive(Serialize, ToSchema)]
pub struct ScanAccepted {
    scan_id: Uuid,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    #[schema(value_type = ScanStatusName)]
    status: &'static str,
    status_vi: &'static str,
    #[schema(value_type = PriorityName)]
    priority: &'static str,
    records_total: i32,
    /// Records refused at submission.
    records_invalid: i32,
    /// The first refused records (at most 100).
    #[schema(value_type = Vec<RecordErrorBody>)]
    errors: Vec<RecordError>,
    /// Where to follow the scan: `/data-scans/{scan_id}?tenant_id={tenant_id}`.
    status_url: String,
}

/// A scan and its progress.
#[derive(Serialize, ToSchema)]
#[schema(as = Scan)]
pub struct ScanBody {
    scan_id: Uuid,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    #[schema(value_type = ScanStatusName)]
    status: &'static str,
    #[schema(example = "hoàn thành")]
    status_vi: &'static str,
    #[schema(value_type = PriorityName)]
    priority: &'static str,
    #[schema(minimum = 0, maximum = 100)]
    progress_percent: f64,
    records_total: i32,
    records_processed: i32,
    records_failed: i32,
    /// The first failed records (at most 100).
    #[schema(value_type = Vec<RecordErrorBody>)]
    errors: Vec<RecordError>,
    /// Present when records failed.
    error_details: Option<ScanErrorDetails>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

/// A summary of a scan's failed records.
#[derive(Serialize, ToSchema)]
pub struct ScanErrorDetails {
    records_failed: i32,
    errors_shown: usize,
    message: String,
    message_vi: String,
}

/// `GET /data-scans`.
#[derive(Serialize, ToSchema)]
pub struct ScanList {
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    count: usize,
    scans: Vec<ScanBody>,
}

/// `201` to `POST /batch/processing-activities`: the valid records are committed.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// False when some chunks could not be written (they are counted in `records_failed`).
    success: bool,
    #[schema(example = "thành công")]
    success_vi: &'static str,
    records_created: u64,
    records_failed: u64,
    #[schema(value_type = Vec<RecordErrorBody>)]
    errors: Vec<RecordError>,
    execution_time_seconds: f64,
    message: String,
    message_vi: String,
}

/// Default and largest page of `GET /data-scans`.
const SCAN_LIST_DEFAULT_LIMIT: i64 = 50;
const SCAN_LIST_MAX_LIMIT: i64 = 500;

/// Accepts a scan: answers once it is committed.
#[utoipa::path(
    post,
    path = "/data-scans",
    tag = "ingest",
    summary = "Submit a scan / Gửi một lần quét",
    description = "Commits the scan in PostgreSQL, then answers 202; the records are written in \
                   the background, throttled per tenant. Invalid records are reported, not \
                   rejected with the scan; a scan with no valid record gets 422. — Lưu lần quét \
                   vào PostgreSQL rồi trả về 202; các bản ghi được ghi ở nền, có giới hạn tốc độ \
                   theo từng tổ chức. Bản ghi không hợp lệ được báo lại; lần quét không có bản \
                   ghi hợp lệ nào nhận 422.",
    request_body = ScanSubmission,
    responses(
        (status = 202, description = "Committed / Đã lưu", body = ScanAccepted),
        (status = 400, description = "Malformed body or field / Nội dung hoặc trường không hợp lệ", body = ErrorBody),
        (status = 403, description = "Tenant outside the key's scope / Tổ chức ngoài phạm vi của khóa", body = ErrorBody),
        (status = 413, description = "Body or record count over the limit / Nội dung hoặc số bản ghi vượt giới hạn", body = ErrorBody),
        (status = 415, description = "Not application/json / Không phải application/json", body = ErrorBody),
        (status = 422, description = "No valid record / Không có bản ghi hợp lệ", body = ErrorBody),
        (status = 429, description = "Tenant backlog full / Hàng đợi của tổ chức đã đầy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds / Số giây"))),
    )
)]
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
    let mut admitted = admit(&state, body.declared_length_opt(), limit).await?;
    *waited = admitted.waited;
    stages.lap("admission_wait");
    let body = body.read(limit, &state.bodies).await?;
    stages.lap("body_read");
    let ingest = &state.settings.ingest;
    let chunk_records = if body.len() as u64 >= ingest.large_scan_body_bytes {
        ingest.large_scan_chunk_records.max(1)
    } else {
        ingest.chunk_records
    };
    let max_records = ingest.max_scan_records;
    let bodies = state.bodies.clone();
    let prepared: PreparedScan =
        parse_off_request_threads(&state, "parsing the scan stopped unexpectedly", move || {
            let prepared = submission::prepare_scan(&body, max_records, chunk_records);
            bodies.give_back(body);
            prepared
        })
        .await??;
    // The body is gone: the scan now holds its chunks, and staging a copy of them.
    admitted.shrink_to(staging_charge_kib(prepared.records.payload_bytes()));
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
    let body = ScanAccepted {
        scan_id: scan.scan_id,
        tenant_id: scan.tenant_id,
        status: scan.status.as_str(),
        status_vi: scan.status.as_str_vi(),
        priority: scan.priority.as_str(),
        records_total: scan.records_total,
        records_invalid: scan_invalid_at_submission(&scan),
        status_url: format!(
            "/data-scans/{}?tenant_id={}",
            scan.scan_id, scan.tenant_id.0
        ),
        errors: scan.errors,
    };
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

/// One scan of a tenant.
#[utoipa::path(
    get,
    path = "/data-scans/{scan_id}",
    tag = "ingest",
    summary = "A scan's progress / Tiến độ của một lần quét",
    description = "A scan's status and progress. Another tenant's scan is 404, like an unknown \
                   one. — Trạng thái và tiến độ của một lần quét. Lần quét của tổ chức khác trả \
                   về 404, như lần quét không tồn tại.",
    params(
        ("scan_id" = Uuid, Path, description = "The scan / Mã lần quét"),
        ("tenant_id" = Uuid, Query, description = "The scan's tenant / Mã tổ chức"),
    ),
    responses(
        (status = 200, description = "The scan / Lần quét", body = ScanBody),
        (status = 400, description = "Missing or malformed parameter / Thiếu hoặc sai tham số", body = ErrorBody),
        (status = 403, description = "Tenant outside the key's scope / Tổ chức ngoài phạm vi của khóa", body = ErrorBody),
        (status = 404, description = "No such scan for this tenant / Không có lần quét này", body = ErrorBody),
    )
)]
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
    Ok(warp::reply::json(&scan_body(scan)).into_response())
}

/// A tenant's scans, newest first.
#[utoipa::path(
    get,
    path = "/data-scans",
    tag = "ingest",
    summary = "A tenant's scans / Các lần quét của một tổ chức",
    description = "A tenant's scans, newest first, optionally of one status. — Các lần quét của \
                   một tổ chức, mới nhất trước, có thể lọc theo trạng thái.",
    params(
        ("tenant_id" = Uuid, Query, description = "The tenant / Mã tổ chức"),
        ("status" = Option<ScanStatusName>, Query, description = "Only scans of this status / Chỉ các lần quét có trạng thái này"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "At most this many (default 50) / Tối đa bấy nhiêu (mặc định 50)"),
    ),
    responses(
        (status = 200, description = "The scans / Các lần quét", body = ScanList),
        (status = 400, description = "Missing or malformed parameter / Thiếu hoặc sai tham số", body = ErrorBody),
        (status = 403, description = "Tenant outside the key's scope / Tổ chức ngoài phạm vi của khóa", body = ErrorBody),
    )
)]
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
    let body = ScanList {
        tenant_id,
        count: scans.len(),
        scans: scans.into_iter().map(scan_body).collect(),
    };
    Ok(warp::reply::json(&body).into_response())
}

fn scan_body(scan: ScanRow) -> ScanBody {
    let accounted = scan.records_processed + scan.records_failed;
    let progress_percent = if scan.records_total > 0 {
        (accounted as f64 * 10_000.0 / scan.records_total as f64).round() / 100.0
    } else {
        100.0
    };
    let error_details = (scan.records_failed > 0).then(|| ScanErrorDetails {
        records_failed: scan.records_failed,
        errors_shown: scan.errors.len(),
        message: format!(
            "{} records failed; the first {} are listed in errors",
            scan.records_failed,
            scan.errors.len()
        ),
        message_vi: format!(
            "{} bản ghi bị lỗi; {} lỗi đầu tiên được liệt kê trong errors",
            scan.records_failed,
            scan.errors.len()
        ),
    });
    ScanBody {
        scan_id: scan.scan_id,
        tenant_id: scan.tenant_id,
        status: scan.status.as_str(),
        status_vi: scan.status.as_str_vi(),
        priority: scan.priority.as_str(),
        progress_percent,
        records_total: scan.records_total,
        records_processed: scan.records_processed,
        records_failed: scan.records_failed,
        errors: scan.errors,
        error_details,
        created_at: scan.created_at,
        started_at: scan.started_at_opt,
        completed_at: scan.completed_at_opt,
    }
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

/// Writes a batch synchronously.
#[utoipa::path(
    post,
    path = "/batch/processing-activities",
    tag = "ingest",
    summary = "Write a batch now / Ghi một lô ngay",
    description = "Answers 201 once the valid records are committed. Obeys the tenant's \
                   throttle: 429 if it would wait longer than the configured bound. — Trả về 201 \
                   khi các bản ghi hợp lệ đã được lưu. Tuân theo giới hạn tốc độ của tổ chức: 429 \
                   nếu phải chờ lâu hơn giới hạn cấu hình.",
    params(
        ("tenant_id" = Uuid, Query, description = "The tenant / Mã tổ chức"),
        ("x-ingest-forwarded-by" = Option<String>, Header, description = "Set by an engine instance that forwarded the batch to its tenant's owner; such a batch is not forwarded again. — Do phiên bản máy chủ đã chuyển lô tới phiên bản phụ trách tổ chức đặt; lô như vậy không được chuyển tiếp lần nữa."),
    ),
    request_body = BatchSubmission,
    responses(
        (status = 201, description = "Committed / Đã lưu", body = BatchResult),
        (status = 400, description = "Malformed body, field or parameter / Nội dung, trường hoặc tham số không hợp lệ", body = ErrorBody),
        (status = 403, description = "Tenant outside the key's scope / Tổ chức ngoài phạm vi của khóa", body = ErrorBody),
        (status = 413, description = "Body or record count over the limit / Nội dung hoặc số bản ghi vượt giới hạn", body = ErrorBody),
        (status = 415, description = "Not application/json / Không phải application/json", body = ErrorBody),
        (status = 422, description = "No valid record / Không có bản ghi hợp lệ", body = ErrorBody),
        (status = 429, description = "Tenant throttled / Tổ chức bị giới hạn tốc độ", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds / Số giây"))),
    )
)]
pub async fn submit_batch(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
    forwarded_by: HeaderText,
    body: PendingBody,
) -> Response {
    let mut waited = false;
    let result =
        submit_batch_inner(state, authorization, query, forwarded_by, body, &mut waited).await;
    close_connection_if(waited, respond(count_rejection(result)))
}

/// `waited` is set when the batch's body sat unread while it waited for admission.
async fn submit_batch_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
    forwarded_by: HeaderText,
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
    let mut admitted = admit(&state, body.declared_length_opt(), limit).await?;
    *waited = admitted.waited;
    stages.lap("admission_wait");
    let body = body.read(limit, &state.bodies).await?;
    stages.lap("body_read");
    // The tenant's actor, which paces and writes it, runs on its owner: a batch that reached
    // another instance goes there, once (a forwarded batch is handled where it arrives).
    if forwarded_by.value_opt().is_none() {
        if let Some((owner, owner_address, _)) =
            crate::store::ownership::live_owner(&state.pool, tenant_id).await?
        {
            if owner != state.instance_id {
                let token = authorization.value_opt().unwrap_or_default();
                return forward_batch(&state, &owner_address, tenant_id, token, body).await;
            }
        }
    }
    let (max_records, chunk_records) = (
        state.settings.ingest.max_batch_records,
        state.settings.ingest.chunk_records,
    );
    let bodies = state.bodies.clone();
    let encoded = parse_off_request_threads(
        &state,
        "parsing the batch stopped unexpectedly",
        move || {
            let encoded = submission::prepare_batch(&body, tenant_id, max_records, chunk_records);
            bodies.give_back(body);
            encoded
        },
    )
    .await??;
    // The body is gone: the batch now holds its chunks until they are written.
    admitted.shrink_to(staging_charge_kib(encoded.payload_bytes()));
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
    let body = BatchResult {
        success,
        success_vi: if success {
            "thành công"
        } else {
            "thành công một phần"
        },
        records_created,
        records_failed,
        errors,
        execution_time_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        message: format!("{records_created} records created, {records_failed} failed"),
        message_vi: format!("đã tạo {records_created} bản ghi, {records_failed} bản ghi lỗi"),
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

/// The header a forwarded batch carries: the id of the instance that forwarded it.
pub const FORWARDED_BY: &str = "x-ingest-forwarded-by";

fn owned_elsewhere() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "tenant_owned_elsewhere",
        "another engine instance writes this tenant's records and could not take the batch; nothing was written, send it again",
        "một phiên bản máy chủ khác đang ghi dữ liệu của tổ chức này và chưa nhận được lô; chưa có dữ liệu nào được ghi, vui lòng gửi lại",
    )
    .with_retry_after(1)
}

/// Sends the batch to the instance that owns its tenant, with the caller's token, and answers
/// with that instance's answer (201 only once it committed the batch).
async fn forward_batch(
    state: &AppState,
    owner_address: &str,
    tenant_id: TenantId,
    authorization: &str,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let url = format!("http://{owner_address}/batch/processing-activities?tenant_id={tenant_id}");
    let answer = state
        .forwarding
        .post(url)
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .header(FORWARDED_BY, &state.instance_id)
        .body(body)
        .send()
        .await
        .map_err(|error| {
            tracing::warn!(%tenant_id, owner = owner_address, %error, "forwarding a batch to its tenant's owner failed");
            owned_elsewhere()
        })?;
    let status = answer.status();
    let retry_after_opt = answer.headers().get("retry-after").cloned();
    let body = answer.bytes().await.map_err(|_| owned_elsewhere())?;
    let mut response = warp::http::Response::new(warp::hyper::Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    response.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json"),
    );
    if let Some(value) =
        retry_after_opt.and_then(|value| warp::http::HeaderValue::from_bytes(value.as_bytes()).ok())
    {
        response.headers_mut().insert("retry-after", value);
    }
    Ok(response)
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
        // Another live instance runs the tenant's actor: it alone may write the batch.
        BatchChunkError::Database(StoreError::Fenced) => owned_elsewhere(),
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
