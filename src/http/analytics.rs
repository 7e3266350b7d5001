//! The dashboard's read routes: `GET /analytics/compliance-summary`,
//! `GET /analytics/processing-activities` and the operators' `GET /analytics/regional-summary`,
//! all on the read pool.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warp::reply::Response;
use warp::Reply;

use super::auth::{authenticate, authorized_tenant};
use super::error::ErrorBody;
use super::headers::HeaderText;
use super::openapi::{PdplCategoryName, RegionName};
use super::{respond, ApiError, AppState, Query};
use crate::domain::{PdplCategory, TenantId};
use crate::store::reads::{self, ActivityRow, PageStart};

/// `GET /analytics/compliance-summary`.
#[derive(Serialize, ToSchema)]
pub struct ComplianceSummary {
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    total_activities: i64,
    categories: Vec<CategoryCount>,
}

/// Activities of one PDPL category.
#[derive(Serialize, ToSchema)]
pub struct CategoryCount {
    #[schema(value_type = PdplCategoryName)]
    category: &'static str,
    #[schema(example = "Loại 2: Dữ liệu cá nhân cơ bản")]
    category_vi: &'static str,
    count: i64,
}

/// `GET /analytics/regional-summary`.
#[derive(Serialize, ToSchema)]
pub struct RegionalSummary {
    total_tenants: i64,
    total_activities: i64,
    regions: Vec<RegionSummary>,
}

/// One region's tenants and activities.
#[derive(Serialize, ToSchema)]
pub struct RegionSummary {
    #[schema(value_type = RegionName)]
    region: &'static str,
    #[schema(example = "Miền Bắc")]
    region_vi: &'static str,
    tenants: i64,
    activities: i64,
    categories: Vec<CategoryCount>,
}

/// `GET /analytics/processing-activities`.
#[derive(Serialize, ToSchema)]
pub struct ActivityPage {
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    count: usize,
    activities: Vec<StoredActivity>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
}

/// A stored processing activity.
#[derive(Serialize, ToSchema)]
pub struct StoredActivity {
    id: Uuid,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    /// Null for a synchronous batch's record.
    scan_id: Option<Uuid>,
    /// Its index within its submission.
    record_index: i32,
    activity_name: String,
    #[schema(value_type = PdplCategoryName)]
    pdpl_category: String,
    data_fields: Vec<String>,
    purpose: Option<String>,
    legal_basis: Option<String>,
    retention_period: Option<String>,
    data_recipients: Option<Vec<String>>,
    created_at: DateTime<Utc>,
}

const TENANT_SCOPE_FORBIDDEN: &str =
    "Tenant outside the key's scope / Tổ chức ngoài phạm vi của khóa";

/// Default and largest page of `GET /analytics/processing-activities`.
const ACTIVITIES_DEFAULT_LIMIT: i64 = 100;
const ACTIVITIES_MAX_LIMIT: i64 = 1_000;

/// A tenant's activities per PDPL category.
#[utoipa::path(
    get,
    path = "/analytics/compliance-summary",
    tag = "analytics",
    summary = "Compliance summary / Tổng hợp tuân thủ",
    description = "A tenant's stored activities per PDPL category. — Số hoạt động xử lý đã lưu \
                   của một tổ chức theo từng loại dữ liệu PDPL.",
    params(("tenant_id" = Uuid, Query, description = "The tenant / Mã tổ chức")),
    responses(
        (status = 200, description = "The summary / Bản tổng hợp", body = ComplianceSummary),
        (status = 400, description = "Missing or malformed parameter / Thiếu hoặc sai tham số", body = ErrorBody),
        (status = 403, description = TENANT_SCOPE_FORBIDDEN, body = ErrorBody),
    )
)]
pub async fn compliance_summary(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Response {
    respond(compliance_summary_inner(state, authorization, query).await)
}

async fn compliance_summary_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Result<Response, ApiError> {
    let tenant_id = authorized_tenant(&state, &authorization, &query).await?;
    let summary = reads::compliance_summary(&state.read_pool, tenant_id).await?;
    let body = ComplianceSummary {
        tenant_id,
        total_activities: summary.total_activities,
        categories: category_counts(&summary.categories),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// Tenants and activities per region, for the platform's operators.
#[utoipa::path(
    get,
    path = "/analytics/regional-summary",
    tag = "analytics",
    summary = "Regional summary / Tổng hợp theo miền",
    description = "Tenants and activities per region (north, central, south, unassigned); admin \
                   or service key. — Số tổ chức và hoạt động theo miền (Bắc, Trung, Nam, chưa \
                   gán); cần khóa quản trị hoặc dịch vụ.",
    responses(
        (status = 200, description = "The summary / Bản tổng hợp", body = RegionalSummary),
        (status = 403, description = "Needs an admin or service key / Cần khóa quản trị hoặc dịch vụ", body = ErrorBody),
    )
)]
pub async fn regional_summary(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            let principal = authenticate(&state, &authorization).await?;
            principal.require_platform()?;
            let summaries = reads::regional_summary(&state.read_pool).await?;
            let regions: Vec<RegionSummary> = summaries
                .iter()
                .map(|summary| RegionSummary {
                    region: summary.region.as_str(),
                    region_vi: summary.region.as_str_vi(),
                    tenants: summary.tenants,
                    activities: summary
                        .categories
                        .iter()
                        .map(|(_, count)| count)
                        .sum::<i64>(),
                    categories: category_counts(&summary.categories),
                })
                .collect();
            let body = RegionalSummary {
                total_tenants: summaries.iter().map(|summary| summary.tenants).sum::<i64>(),
                total_activities: regions.iter().map(|region| region.activities).sum::<i64>(),
                regions,
            };
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

/// A page of a tenant's stored activities.
#[utoipa::path(
    get,
    path = "/analytics/processing-activities",
    tag = "analytics",
    summary = "Stored activities / Các hoạt động đã lưu",
    description = "A page of a tenant's activities in the order they were accepted: by offset \
                   (`skip`) or, faster on deep pages, by `cursor` (the previous page's \
                   `next_cursor`); not both. — Một trang các hoạt động của tổ chức theo thứ tự \
                   được nhận: theo vị trí (`skip`) hoặc, nhanh hơn với trang sâu, theo `cursor` \
                   (giá trị `next_cursor` của trang trước); không dùng cả hai.",
    params(
        ("tenant_id" = Uuid, Query, description = "The tenant / Mã tổ chức"),
        ("skip" = Option<i64>, Query, minimum = 0, description = "Activities to skip (default 0) / Số hoạt động bỏ qua (mặc định 0)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100) / Kích thước trang (mặc định 100)"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-fA-F]{32})?$", description = "A previous page's next_cursor; empty is the first page / Giá trị next_cursor của trang trước; rỗng là trang đầu"),
    ),
    responses(
        (status = 200, description = "The page / Trang kết quả", body = ActivityPage),
        (status = 400, description = "Missing, malformed or conflicting parameter / Thiếu, sai hoặc xung đột tham số", body = ErrorBody),
        (status = 403, description = TENANT_SCOPE_FORBIDDEN, body = ErrorBody),
    )
)]
pub async fn processing_activities(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Response {
    respond(processing_activities_inner(state, authorization, query).await)
}

async fn processing_activities_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Result<Response, ApiError> {
    let tenant_id = authorized_tenant(&state, &authorization, &query).await?;
    let limit = parse_limit(&query)?;
    let start = parse_page_start(&query)?;
    let page = reads::activities_page(&state.read_pool, tenant_id, start, limit).await?;
    let body = ActivityPage {
        tenant_id,
        count: page.activities.len(),
        activities: page.activities.into_iter().map(stored_activity).collect(),
        next_cursor: page.next_after_opt.map(encode_cursor),
    };
    Ok(warp::reply::json(&body).into_response())
}

fn parse_limit(query: &Query) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(ACTIVITIES_DEFAULT_LIMIT),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=ACTIVITIES_MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {ACTIVITIES_MAX_LIMIT}"),
                    format!("limit phải là số nguyên từ 1 đến {ACTIVITIES_MAX_LIMIT}"),
                )
            }),
    }
}

/// `skip` (an offset) or `cursor` (keyset): not both, since a cursor already says where to start.
/// An empty `cursor=` is the first page, so a client can always send the last `next_cursor`.
fn parse_page_start(query: &Query) -> Result<PageStart, ApiError> {
    let skip = match query.get("skip") {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|skip| *skip >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_skip",
                    "skip must be an integer of at least 0",
                    "skip phải là số nguyên lớn hơn hoặc bằng 0",
                )
            })?,
    };
    match query.get("cursor").map(String::as_str) {
        None | Some("") => Ok(PageStart::Offset(skip)),
        Some(_) if skip > 0 => Err(ApiError::bad_request(
            "conflicting_parameters",
            "use either skip or cursor, not both",
            "chỉ dùng một trong hai tham số skip hoặc cursor, không dùng cả hai",
        )),
        Some(text) => decode_cursor(text).map(PageStart::After).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor value returned by this route",
                "cursor phải là giá trị next_cursor do đường dẫn này trả về",
            )
        }),
    }
}

/// A cursor is the last activity's id as 32 hexadecimal digits. Clients treat it as opaque; it
/// carries nothing a tenant could not already read, and another tenant's id in it only moves the
/// start of the caller's own pages.
fn encode_cursor(id: Uuid) -> String {
    id.simple().to_string()
}

fn decode_cursor(text: &str) -> Option<Uuid> {
    if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    Uuid::try_parse(text).ok()
}

fn stored_activity(activity: ActivityRow) -> StoredActivity {
    StoredActivity {
        id: activity.id,
        tenant_id: activity.tenant_id,
        scan_id: activity.scan_id_opt,
        record_index: activity.record_index,
        activity_name: activity.activity_name,
        pdpl_category: activity.pdpl_category,
        data_fields: activity.data_fields,
        purpose: activity.purpose_opt,
        legal_basis: activity.legal_basis_opt,
        retention_period: activity.retention_period_opt,
        data_recipients: activity.data_recipients_opt,
        created_at: activity.created_at,
    }
}

/// Counts per category, as both summaries answer them.
fn category_counts(categories: &[(PdplCategory, i64)]) -> Vec<CategoryCount> {
    categories
        .iter()
        .map(|(category, count)| CategoryCount {
            category: category.as_str(),
            category_vi: category.as_str_vi(),
            count: *count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        for bad in [
            "",
            "abc",
            &id.to_string(),
            &format!("{}zz", &id.simple().to_string()[..30]),
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn page_parameters() {
        assert_eq!(parse_limit(&query(&[])).unwrap(), 100);
        assert_eq!(parse_limit(&query(&[("limit", "1000")])).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert_eq!(
                parse_limit(&query(&[("limit", bad)])).unwrap_err().code,
                "invalid_limit"
            );
        }
        assert_eq!(parse_page_start(&query(&[])).unwrap(), PageStart::Offset(0));
        assert_eq!(
            parse_page_start(&query(&[("skip", "20"), ("cursor", "")])).unwrap(),
            PageStart::Offset(20)
        );
        let id = Uuid::now_v7();
        assert_eq!(
            parse_page_start(&query(&[("cursor", &encode_cursor(id)), ("skip", "0")])).unwrap(),
            PageStart::After(id)
        );
        let code = |pairs: &[(&str, &str)]| parse_page_start(&query(pairs)).unwrap_err().code;
        assert_eq!(code(&[("skip", "-1")]), "invalid_skip");
        assert_eq!(code(&[("skip", "x")]), "invalid_skip");
        assert_eq!(code(&[("cursor", "nope")]), "invalid_cursor");
        assert_eq!(
            code(&[("cursor", &encode_cursor(id)), ("skip", "5")]),
            "conflicting_parameters"
        );
    }
}
