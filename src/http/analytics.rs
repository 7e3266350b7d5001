//! The dashboard's read routes: `GET /analytics/compliance-summary`,
//! `GET /analytics/processing-activities` and the operators' `GET /analytics/regional-summary`,
//! all on the read pool.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;
use warp::Reply;

use super::auth::{authenticate, authorized_tenant};
use super::headers::HeaderText;
use super::{respond, ApiError, AppState, Query};
use crate::domain::PdplCategory;
use crate::store::reads::{self, ActivityRow, PageStart};

/// Default and largest page of `GET /analytics/processing-activities`.
const ACTIVITIES_DEFAULT_LIMIT: i64 = 100;
const ACTIVITIES_MAX_LIMIT: i64 = 1_000;

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
    let body = json!({
        "tenant_id": tenant_id,
        "total_activities": summary.total_activities,
        "categories": categories_json(&summary.categories),
    });
    Ok(warp::reply::json(&body).into_response())
}

pub async fn regional_summary(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            let principal = authenticate(&state, &authorization).await?;
            principal.require_platform()?;
            let summaries = reads::regional_summary(&state.read_pool).await?;
            let regions: Vec<serde_json::Value> = summaries
                .iter()
                .map(|summary| {
                    json!({
                        "region": summary.region.as_str(),
                        "region_vi": summary.region.as_str_vi(),
                        "tenants": summary.tenants,
                        "activities": summary.categories.iter().map(|(_, count)| count).sum::<i64>(),
                        "categories": categories_json(&summary.categories),
                    })
                })
                .collect();
            let body = json!({
                "total_tenants": summaries.iter().map(|summary| summary.tenants).sum::<i64>(),
                "total_activities": summaries
                    .iter()
                    .flat_map(|summary| summary.categories.iter().map(|(_, count)| count))
                    .sum::<i64>(),
                "regions": regions,
            });
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

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
    let body = json!({
        "tenant_id": tenant_id,
        "count": page.activities.len(),
        "activities": page.activities.iter().map(activity_json).collect::<Vec<_>>(),
        "next_cursor": page.next_after_opt.map(encode_cursor),
    });
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

fn activity_json(activity: &ActivityRow) -> serde_json::Value {
    json!({
        "id": activity.id,
        "tenant_id": activity.tenant_id,
        "scan_id": activity.scan_id_opt,
        "record_index": activity.record_index,
        "activity_name": activity.activity_name,
        "pdpl_category": activity.pdpl_category,
        "data_fields": activity.data_fields,
        "purpose": activity.purpose_opt,
        "legal_basis": activity.legal_basis_opt,
        "retention_period": activity.retention_period_opt,
        "data_recipients": activity.data_recipients_opt,
        "created_at": activity.created_at,
    })
}

/// Counts per category, as both summaries answer them: `{"category", "category_vi", "count"}`.
fn categories_json(categories: &[(PdplCategory, i64)]) -> Vec<serde_json::Value> {
    categories
        .iter()
        .map(|(category, count)| {
            json!({
                "category": category.as_str(),
                "category_vi": category.as_str_vi(),
                "count": count,
            })
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
