//! Audit events (SPEC section 7): who did what to which subject, with a one-line summary in
//! English and Vietnamese. Built here, written by `store::audit_log` in the transaction of the
//! change each records.
//!
//! **Invariant:** an event's details hold counts, ids and before/after settings, never record
//! contents (no personal data).

use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::Principal;
use super::TenantId;

/// The fixed vocabulary of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    ScanAccepted,
    /// Written by the chunk transaction that finishes a scan, as `scan_` and its status:
    /// `scan_completed`, `scan_completed_with_errors`, `scan_failed`.
    ScanFinished,
    BatchCommitted,
    DeadLetterReplayed,
    DeadLetterReplayFailed,
    TenantCreated,
    LimitsChanged,
    TenantPaused,
    TenantResumed,
    KeyMinted,
    KeyRevoked,
    AuditMaintenance,
    AuditArchived,
    RetentionRun,
    WebhookRegistered,
    WebhookDeleted,
    WebhookDelivered,
    WebhookDeliveryFailed,
    WebhookRedelivered,
}

impl AuditAction {
    /// Every action name an entry can carry (what `GET /admin/audit?action=` accepts).
    pub const NAMES: [&'static str; 21] = [
        "scan_accepted",
        "scan_completed",
        "scan_completed_with_errors",
        "scan_failed",
        "batch_committed",
        "dead_letter_replayed",
        "dead_letter_replay_failed",
        "tenant_created",
        "limits_changed",
        "tenant_paused",
        "tenant_resumed",
        "key_minted",
        "key_revoked",
        "audit_maintenance",
        "audit_archived",
        "retention_run",
        "webhook_registered",
        "webhook_deleted",
        "webhook_delivered",
        "webhook_delivery_failed",
        "webhook_redelivered",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ScanAccepted => "scan_accepted",
            AuditAction::ScanFinished => "scan_finished",
            AuditAction::BatchCommitted => "batch_committed",
            AuditAction::DeadLetterReplayed => "dead_letter_replayed",
            AuditAction::DeadLetterReplayFailed => "dead_letter_replay_failed",
            AuditAction::TenantCreated => "tenant_created",
            AuditAction::LimitsChanged => "limits_changed",
            AuditAction::TenantPaused => "tenant_paused",
            AuditAction::TenantResumed => "tenant_resumed",
            AuditAction::KeyMinted => "key_minted",
            AuditAction::KeyRevoked => "key_revoked",
            AuditAction::AuditMaintenance => "audit_maintenance",
            AuditAction::AuditArchived => "audit_archived",
            AuditAction::RetentionRun => "retention_run",
            AuditAction::WebhookRegistered => "webhook_registered",
            AuditAction::WebhookDeleted => "webhook_deleted",
            AuditAction::WebhookDelivered => "webhook_delivered",
            AuditAction::WebhookDeliveryFailed => "webhook_delivery_failed",
            AuditAction::WebhookRedelivered => "webhook_redelivered",
        }
    }
}

/// The tenant of cluster-wide events: every key of the log starts with a tenant id.
pub const CLUSTER_TENANT: TenantId = TenantId(Uuid::nil());

/// The actor of what the engine does on its own (a scan finishing, upkeep).
pub const ENGINE_ACTOR: &str = "engine";

/// One entry of the audit log, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub event_id: Uuid,
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: AuditAction,
    pub subject: String,
    pub details: Value,
    pub summary: String,
    pub summary_vi: String,
}

/// Who a principal is in the log: its key id, or `bootstrap`.
pub fn actor_of(principal: &Principal) -> String {
    principal
        .key_id_opt
        .map_or_else(|| "bootstrap".to_string(), |key_id| key_id.to_string())
}

impl AuditEvent {
    fn new(
        tenant_id: TenantId,
        actor: String,
        action: AuditAction,
        subject: String,
        details: Value,
        (summary, summary_vi): (String, String),
    ) -> AuditEvent {
        AuditEvent {
            event_id: Uuid::now_v7(),
            tenant_id,
            actor,
            action,
            subject,
            details,
            summary,
            summary_vi,
        }
    }

    pub fn scan_accepted(
        principal: &Principal,
        tenant_id: TenantId,
        scan_id: Uuid,
        records_total: i32,
        records_invalid: i32,
        priority: &str,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            AuditAction::ScanAccepted,
            scan_id.to_string(),
            json!({ "records_total": records_total, "records_invalid": records_invalid, "priority": priority }),
            (
                format!("scan accepted: {records_total} records, {records_invalid} invalid"),
                format!("đã nhận lượt quét: {records_total} bản ghi, {records_invalid} bản ghi không hợp lệ"),
            ),
        )
    }

    pub fn batch_committed(
        principal: &Principal,
        tenant_id: TenantId,
        batch_id: Uuid,
        records_created: u64,
        records_failed: u64,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            AuditAction::BatchCommitted,
            batch_id.to_string(),
            json!({ "records_created": records_created, "records_failed": records_failed }),
            (
                format!("batch committed: {records_created} records created, {records_failed} failed"),
                format!("đã ghi lô dữ liệu: tạo {records_created} bản ghi, {records_failed} bản ghi lỗi"),
            ),
        )
    }

    pub fn dead_letter_replayed(
        principal: &Principal,
        tenant_id: TenantId,
        dead_letter_id: i64,
        error_opt: Option<&str>,
    ) -> AuditEvent {
        let subject = dead_letter_id.to_string();
        match error_opt {
            None => AuditEvent::new(
                tenant_id,
                actor_of(principal),
                AuditAction::DeadLetterReplayed,
                subject,
                json!({ "replayed": true }),
                (
                    format!("dead letter {dead_letter_id} replayed and written"),
                    format!("đã ghi lại bản ghi lỗi {dead_letter_id}"),
                ),
            ),
            Some(error) => AuditEvent::new(
                tenant_id,
                actor_of(principal),
                AuditAction::DeadLetterReplayFailed,
                subject,
                json!({ "replayed": false, "error": error }),
                (
                    format!("dead letter {dead_letter_id} replayed and refused again"),
                    format!("ghi lại bản ghi lỗi {dead_letter_id} nhưng vẫn bị từ chối"),
                ),
            ),
        }
    }

    /// An admin change to a tenant (created, limits, pause, resume), with its state before
    /// (none for a creation) and after.
    pub fn tenant_changed(
        principal: &Principal,
        action: AuditAction,
        tenant_id: TenantId,
        before_opt: Option<Value>,
        after: Value,
    ) -> AuditEvent {
        let (summary, summary_vi) = match action {
            AuditAction::TenantCreated => ("tenant created", "đã tạo tổ chức"),
            AuditAction::TenantPaused => ("tenant paused", "đã tạm dừng tổ chức"),
            AuditAction::TenantResumed => ("tenant resumed", "đã tiếp tục tổ chức"),
            _ => ("tenant limits changed", "đã thay đổi giới hạn của tổ chức"),
        };
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            action,
            tenant_id.to_string(),
            json!({ "before": before_opt, "after": after }),
            (summary.to_string(), summary_vi.to_string()),
        )
    }

    pub fn key_minted(
        principal: &Principal,
        key_id: Uuid,
        tenant_opt: Option<TenantId>,
        after: Value,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_opt.unwrap_or(CLUSTER_TENANT),
            actor_of(principal),
            AuditAction::KeyMinted,
            key_id.to_string(),
            json!({ "after": after }),
            (
                format!("API key {key_id} minted"),
                format!("đã tạo khóa API {key_id}"),
            ),
        )
    }

    pub fn key_revoked(
        principal: &Principal,
        key_id: Uuid,
        tenant_opt: Option<TenantId>,
        before: Value,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_opt.unwrap_or(CLUSTER_TENANT),
            actor_of(principal),
            AuditAction::KeyRevoked,
            key_id.to_string(),
            json!({ "before": before, "after": { "revoked": true } }),
            (
                format!("API key {key_id} revoked"),
                format!("đã thu hồi khóa API {key_id}"),
            ),
        )
    }

    /// One run of the audit upkeep: partitions created, and what the run found.
    pub fn audit_maintenance(
        subject: &str,
        details: Value,
        created: usize,
        months_ahead: i64,
    ) -> AuditEvent {
        AuditEvent::new(
            CLUSTER_TENANT,
            ENGINE_ACTOR.to_string(),
            AuditAction::AuditMaintenance,
            subject.to_string(),
            details,
            (
                format!("audit upkeep: {created} monthly partitions created, {months_ahead} months ready ahead"),
                format!("bảo trì nhật ký kiểm toán: đã tạo {created} phân vùng tháng, sẵn sàng {months_ahead} tháng tới"),
            ),
        )
    }

    /// One archive run: the months archived (verified files) and dropped.
    pub fn audit_archived(months: &[String], rows: i64, bytes: i64) -> AuditEvent {
        AuditEvent::new(
            CLUSTER_TENANT,
            ENGINE_ACTOR.to_string(),
            AuditAction::AuditArchived,
            months.join(","),
            json!({ "months": months, "rows": rows, "bytes": bytes }),
            (
                format!("audit archive: {} months archived to Parquet and dropped, {rows} entries", months.len()),
                format!("lưu trữ nhật ký kiểm toán: {} tháng đã ghi ra Parquet và xóa khỏi cơ sở dữ liệu, {rows} mục", months.len()),
            ),
        )
    }

    /// One retention run: finished scans and replayed dead letters deleted.
    pub fn retention_run(
        scan_days: u32,
        scans_deleted: u64,
        dead_letters_deleted: u64,
    ) -> AuditEvent {
        AuditEvent::new(
            CLUSTER_TENANT,
            ENGINE_ACTOR.to_string(),
            AuditAction::RetentionRun,
            format!("older_than_{scan_days}_days"),
            json!({ "scan_days": scan_days, "scans_deleted": scans_deleted, "dead_letters_deleted": dead_letters_deleted }),
            (
                format!("retention: {scans_deleted} finished scans and {dead_letters_deleted} replayed dead letters older than {scan_days} days deleted"),
                format!("lưu giữ dữ liệu: đã xóa {scans_deleted} lượt quét đã xong và {dead_letters_deleted} bản ghi lỗi đã ghi lại, cũ hơn {scan_days} ngày"),
            ),
        )
    }

    /// A webhook endpoint registered (its secret is never part of the entry).
    pub fn webhook_registered(
        principal: &Principal,
        tenant_id: TenantId,
        endpoint_id: Uuid,
        url: &str,
        events: &[String],
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            AuditAction::WebhookRegistered,
            endpoint_id.to_string(),
            json!({ "url": url, "events": events }),
            (
                format!("webhook endpoint registered: {url}"),
                format!("đã đăng ký điểm nhận webhook: {url}"),
            ),
        )
    }

    pub fn webhook_deleted(
        principal: &Principal,
        tenant_id: TenantId,
        endpoint_id: Uuid,
        url: &str,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            AuditAction::WebhookDeleted,
            endpoint_id.to_string(),
            json!({ "url": url }),
            (
                format!("webhook endpoint deleted: {url}"),
                format!("đã xóa điểm nhận webhook: {url}"),
            ),
        )
    }

    /// A delivery's final outcome: delivered (a 2xx) or failed after its last attempt.
    pub fn webhook_outcome(
        tenant_id: TenantId,
        delivery_id: Uuid,
        delivered: bool,
        attempts: i32,
        status_code_opt: Option<i32>,
        error_opt: Option<&str>,
    ) -> AuditEvent {
        let details = json!({
            "attempts": attempts,
            "last_status_code": status_code_opt,
            "last_error": error_opt,
        });
        if delivered {
            AuditEvent::new(
                tenant_id,
                ENGINE_ACTOR.to_string(),
                AuditAction::WebhookDelivered,
                delivery_id.to_string(),
                details,
                (
                    format!("webhook delivered after {attempts} attempts"),
                    format!("đã gửi webhook sau {attempts} lần thử"),
                ),
            )
        } else {
            AuditEvent::new(
                tenant_id,
                ENGINE_ACTOR.to_string(),
                AuditAction::WebhookDeliveryFailed,
                delivery_id.to_string(),
                details,
                (
                    format!("webhook delivery failed after {attempts} attempts"),
                    format!("gửi webhook thất bại sau {attempts} lần thử"),
                ),
            )
        }
    }

    pub fn webhook_redelivered(
        principal: &Principal,
        tenant_id: TenantId,
        delivery_id: Uuid,
    ) -> AuditEvent {
        AuditEvent::new(
            tenant_id,
            actor_of(principal),
            AuditAction::WebhookRedelivered,
            delivery_id.to_string(),
            json!({}),
            (
                "webhook delivery sent again by hand".to_string(),
                "đã gửi lại webhook theo yêu cầu".to_string(),
            ),
        )
    }
}
