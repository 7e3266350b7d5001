//! The one mapping from failures to HTTP status and bilingual error body.
//!
//! Every error response is `{"code", "error", "error_vi", "details"?}`; 429 and 503 carry
//! `Retry-After`.

use serde::Serialize;
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::domain::client_text;
use crate::store::{FailureClass, StoreError};
use crate::submission::SubmissionError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub error: String,
    pub error_vi: String,
    pub details_opt: Option<serde_json::Value>,
    pub retry_after_secs_opt: Option<u64>,
    /// Adds `WWW-Authenticate: Bearer` (401s).
    pub challenge: bool,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(
    as = Error,
    description = "Every error response: a stable snake_case code and the message in English \
                   and Vietnamese. — Mọi phản hồi lỗi: một mã snake_case cố định và thông báo \
                   bằng tiếng Anh và tiếng Việt."
)]
pub struct ErrorBody<'a> {
    /// Stable, machine-readable: `missing_token`, `invalid_field`, `not_found`, …
    #[schema(example = "invalid_field")]
    code: &'a str,
    /// The message in English.
    #[schema(example = "tenant_id must be a UUID")]
    error: &'a str,
    /// The message in Vietnamese.
    #[schema(example = "tenant_id phải là một UUID")]
    error_vi: &'a str,
    /// What the error concerns, when there is more to say (a field, a limit, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        error: impl Into<String>,
        error_vi: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            error: error.into(),
            error_vi: error_vi.into(),
            details_opt: None,
            retry_after_secs_opt: None,
            challenge: false,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details_opt = Some(details);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_secs_opt = Some(seconds.max(1));
        self
    }

    pub fn bad_request(
        code: &'static str,
        error: impl Into<String>,
        error_vi: impl Into<String>,
    ) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, error, error_vi)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the requested resource does not exist",
            "tài nguyên được yêu cầu không tồn tại",
        )
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the engine is shutting down; retry shortly",
            "hệ thống đang tắt; vui lòng thử lại sau ít phút",
        )
        .with_retry_after(5)
    }

    /// The engine is at its bounds (admission budget, pool): nothing was stored.
    pub fn engine_saturated() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_saturated",
            "the engine is at capacity; nothing was stored, retry shortly",
            "hệ thống đang quá tải; chưa có dữ liệu nào được lưu, vui lòng thử lại sau",
        )
        .with_retry_after(2)
    }

    pub fn payload_too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
            format!("nội dung yêu cầu vượt quá {limit} byte"),
        )
        .with_details(json!({ "max_bytes": limit }))
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            error: &self.error,
            error_vi: &self.error_vi,
            details: self.details_opt.as_ref(),
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_secs_opt {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::domain::auth::Denial> for ApiError {
    fn from(denial: crate::domain::auth::Denial) -> ApiError {
        super::auth::denied(denial)
    }
}

impl From<SubmissionError> for ApiError {
    fn from(error: SubmissionError) -> ApiError {
        match error {
            SubmissionError::Malformed(reason) => ApiError::bad_request(
                "malformed_request",
                format!("the request body is not valid JSON for this route: {reason}"),
                format!("nội dung yêu cầu không phải JSON hợp lệ cho đường dẫn này: {reason}"),
            ),
            SubmissionError::InvalidField {
                field,
                message,
                message_vi,
            } => ApiError::bad_request("invalid_field", message, message_vi)
                .with_details(json!({ "field": field })),
            SubmissionError::NoRecords => ApiError::bad_request(
                "no_records",
                "activities must hold at least one record",
                "activities phải có ít nhất một bản ghi",
            ),
            SubmissionError::TooManyRecords { count, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_records",
                format!("{count} records submitted; at most {max} are accepted at once"),
                format!("đã gửi {count} bản ghi; mỗi lần chỉ chấp nhận tối đa {max} bản ghi"),
            )
            .with_details(json!({ "count": count, "max_records": max })),
            SubmissionError::NothingValid {
                errors,
                records_failed,
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_valid_records",
                "no record of the submission is valid; nothing was stored",
                "không có bản ghi hợp lệ nào trong yêu cầu; không có dữ liệu nào được lưu",
            )
            .with_details(json!({ "records_failed": records_failed, "errors": errors })),
        }
    }
}

impl From<StoreError> for ApiError {
    /// Only a retryable failure (the database unreachable, busy or restarting) is a 503 with
    /// `Retry-After`: a client that obeys it would otherwise retry a permanent refusal forever.
    /// A pool that had no free connection in time means the engine is saturated. Every other
    /// failure is logged and counted by class.
    fn from(error: StoreError) -> ApiError {
        if matches!(error, StoreError::PoolTimeout) {
            return ApiError::engine_saturated();
        }
        let class = error.class();
        metrics::counter!(crate::metrics::REQUEST_DATABASE_ERRORS, "class" => class.as_str())
            .increment(1);
        let sqlstate = error.sqlstate_opt().unwrap_or("").to_string();
        match class {
            FailureClass::Retryable => {
                tracing::warn!(%error, "request failed on the database; retryable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; the request changed nothing, retry shortly",
                    "cơ sở dữ liệu tạm thời không khả dụng; yêu cầu chưa thay đổi dữ liệu nào, vui lòng thử lại sau",
                )
                .with_retry_after(2)
            }
            FailureClass::Data => {
                tracing::error!(%error, "the database refused a request's data");
                let reason =
                    client_text::shown(&error.database_message(), client_text::MESSAGE_MAX_CHARS);
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refused_by_database",
                    format!("the database refused the request's data; nothing was stored, and the same request will be refused again: {reason}"),
                    format!("cơ sở dữ liệu từ chối dữ liệu của yêu cầu; chưa có dữ liệu nào được lưu, gửi lại nguyên yêu cầu này sẽ vẫn bị từ chối: {reason}"),
                )
                .with_details(json!({ "sqlstate": sqlstate }))
            }
            FailureClass::Integrity => {
                tracing::error!(%error, "the request conflicts with stored data");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict_in_database",
                    "the request conflicts with data already stored; nothing was changed",
                    "yêu cầu xung đột với dữ liệu đã lưu; chưa có thay đổi nào được thực hiện",
                )
                .with_details(json!({ "sqlstate": sqlstate }))
            }
            FailureClass::Other => {
                tracing::error!(%error, "request failed on the database; not retryable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_error",
                    "the database refused the request for a reason retrying will not fix; nothing was changed, and the operators can find it in the engine's log",
                    "cơ sở dữ liệu từ chối yêu cầu vì một lỗi mà thử lại cũng không khắc phục được; chưa có thay đổi nào, quản trị viên có thể xem chi tiết trong nhật ký của hệ thống",
                )
                .with_details(json!({ "sqlstate": sqlstate }))
            }
        }
    }
}
