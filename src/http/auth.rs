//! `Authorization: Bearer` on every route but health and metrics: 401 for a missing, unknown or
//! revoked token, 403 for a tenant or route outside the key's scope.

use warp::http::StatusCode;

use super::headers::HeaderText;
use super::ingest::tenant_from_query;
use super::{ApiError, AppState, Query};
use crate::domain::auth::{self, Denial, Principal, Scope};
use crate::domain::TenantId;
use crate::store::governance;

/// The caller behind the `Authorization` header. Minted keys are read from the database on
/// every request, so a revocation takes effect on the very next request, on every instance.
pub async fn authenticate(
    state: &AppState,
    authorization: &HeaderText,
) -> Result<Principal, ApiError> {
    match authorization {
        HeaderText::NotAscii => return Err(unauthorized("invalid_authorization_header")),
        HeaderText::Repeated => return Err(unauthorized("repeated_authorization_header")),
        HeaderText::Absent | HeaderText::One(_) => {}
    }
    let token = authorization
        .value_opt()
        .and_then(|header| {
            let (scheme, token) = header.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| unauthorized("missing_token"))?;
    if let Some(bootstrap_hash) = &state.bootstrap_token_hash_opt {
        if auth::digests_equal(bootstrap_hash, &auth::hash_secret(token)) {
            return Ok(Principal {
                scope: Scope::Admin,
                key_id_opt: None,
            });
        }
    }
    let presented = auth::parse_token(token).ok_or_else(|| unauthorized("invalid_token"))?;
    let stored = governance::active_key(&state.pool, presented.key_id)
        .await?
        .ok_or_else(|| unauthorized("invalid_token"))?;
    if !auth::digests_equal(&presented.secret_hash, &stored.secret_hash) {
        return Err(unauthorized("invalid_token"));
    }
    Ok(Principal {
        scope: stored.scope,
        key_id_opt: Some(presented.key_id),
    })
}

/// The tenant named by the `tenant_id` query parameter of a tenant-scoped request, once the
/// caller is authenticated (401 otherwise) and its key covers that tenant (403 otherwise).
pub async fn authorized_tenant(
    state: &AppState,
    authorization: &HeaderText,
    query: &Query,
) -> Result<TenantId, ApiError> {
    let principal = authenticate(state, authorization).await?;
    let tenant_id = tenant_from_query(query)?;
    principal.require_tenant(tenant_id)?;
    Ok(tenant_id)
}

fn unauthorized(code: &'static str) -> ApiError {
    let (error, error_vi) = match code {
        "missing_token" => (
            "this route needs an Authorization: Bearer <token> header",
            "đường dẫn này cần tiêu đề Authorization: Bearer <token>",
        ),
        "invalid_authorization_header" => (
            "the Authorization header must be ASCII: Bearer <token>",
            "tiêu đề Authorization chỉ được chứa ký tự ASCII: Bearer <token>",
        ),
        "repeated_authorization_header" => (
            "send exactly one Authorization header",
            "chỉ được gửi đúng một tiêu đề Authorization",
        ),
        _ => (
            "the token is invalid or has been revoked",
            "mã truy cập không hợp lệ hoặc đã bị thu hồi",
        ),
    };
    let mut error = ApiError::new(StatusCode::UNAUTHORIZED, code, error, error_vi);
    error.challenge = true;
    error
}

/// The 403 for a denial.
pub fn denied(denial: Denial) -> ApiError {
    match denial {
        Denial::AdminOnly => ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_scope_required",
            "this route needs an admin key",
            "đường dẫn này cần khóa quản trị (admin)",
        ),
        Denial::PlatformOnly => ApiError::new(
            StatusCode::FORBIDDEN,
            "platform_scope_required",
            "this route spans every tenant and needs an admin or service key",
            "đường dẫn này bao gồm mọi tổ chức và cần khóa quản trị (admin) hoặc dịch vụ (service)",
        ),
        Denial::OtherTenant => ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_out_of_scope",
            "this key may not act for that tenant",
            "khóa này không được phép thao tác cho tổ chức đó",
        ),
    }
}
