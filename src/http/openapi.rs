//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json` (no token).
//!
//! utoipa generates it at compile time from each handler's `#[utoipa::path]` (route, parameters
//! with their bounds, statuses) and from the request, response and error types the handlers
//! serialize (`ToSchema`): a field added to a response type is in the document with it. What the
//! annotations would only repeat is added here, once: the bearer scheme, and on every route that
//! takes a token the 401 (no or bad token) and 503 (database unavailable or engine saturated)
//! that every such route can answer. The record's bounds come from the constants the record
//! parser uses, and the submission sizes from the running configuration.
//!
//! **Invariant:** the document's paths and methods are exactly [`super::ROUTES`] (the test
//! `openapi::the_document_and_the_router_have_the_same_routes` walks both).

use std::borrow::Cow;

use bytes::Bytes;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder,
    Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::KnownFormat;
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use warp::reply::Response as HttpResponse;
use warp::Reply;

use super::error::ErrorBody;
use crate::config::Settings;
use crate::domain::audit::AuditAction;
use crate::domain::record::{
    ACTIVITY_NAME_MAX_CHARS, DATA_FIELDS_MAX_ITEMS, DATA_FIELD_MAX_CHARS,
    DATA_RECIPIENTS_MAX_ITEMS, DATA_RECIPIENT_MAX_CHARS, LEGAL_BASIS_MAX_CHARS, PURPOSE_MAX_CHARS,
    RETENTION_PERIOD_MAX_CHARS,
};
use crate::domain::{PdplCategory, Priority, Region, ScanStatus};

/// Routes that need no token.
const PUBLIC_PATHS: [&str; 5] = [
    "/health",
    "/health/database",
    "/health/connection-pools",
    "/metrics",
    "/openapi.json",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tenant ingestion engine",
        description = "The write path of a PDPL data inventory: tenants submit processing \
                       activities, the engine throttles each tenant, writes them to PostgreSQL \
                       and reports progress. Every error has the body \
                       `{code, error, error_vi, details?}`; 429 and 503 carry `Retry-After` \
                       (except 503 `database_error`, which retrying will not fix). Any request \
                       may also get 405 for a method its path does not have, and 400, 414 or \
                       431 from the HTTP layer (not HTTP/1.1, a URI over 64 KiB, too many or too \
                       large headers), with the same body. — \
                       Đường ghi dữ liệu của hệ thống kiểm kê dữ liệu theo Luật Bảo vệ dữ liệu cá \
                       nhân: các tổ chức gửi hoạt động xử lý dữ liệu, hệ thống giới hạn tốc độ \
                       từng tổ chức, ghi vào PostgreSQL và báo tiến độ. Mọi lỗi có nội dung \
                       `{code, error, error_vi, details?}`; 429 và 503 kèm `Retry-After` (trừ \
                       503 `database_error`, lỗi mà thử lại cũng không khắc phục được). Mọi yêu \
                       cầu cũng có thể nhận 405 với phương thức mà đường dẫn không hỗ trợ, và \
                       400, 414 hoặc 431 từ tầng HTTP (không phải HTTP/1.1, URI dài quá 64 KiB, \
                       tiêu đề quá nhiều hoặc quá lớn), với cùng nội dung lỗi."
    ),
    paths(
        super::health::liveness,
        super::health::database,
        super::health::connection_pools,
        super::render_metrics,
        document_response,
        super::ingest::submit_scan,
        super::ingest::list_scans,
        super::ingest::get_scan,
        super::ingest::submit_batch,
        super::analytics::compliance_summary,
        super::analytics::processing_activities,
        super::analytics::regional_summary,
        super::admin::create_tenant,
        super::admin::list_tenants,
        super::admin::show_tenant,
        super::admin::set_limits,
        super::admin::pause,
        super::admin::resume,
        super::admin::mint_key,
        super::admin::revoke_key,
        super::admin::list_dead_letters,
        super::admin::replay_dead_letter,
        super::audit::read_audit,
        super::audit::list_archives,
        super::admin::list_instances,
        super::webhooks::register,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::list_deliveries,
        super::webhooks::redeliver,
    ),
    components(schemas(
        ErrorBody,
        Activity,
        PriorityName,
        ScanStatusName,
        PdplCategoryName,
        RegionName,
        TenantRegionName,
        AuditActionName,
        KeyScopeName,
        TenantFilter,
        NewKey,
        LimitsChangeBody,
        WebhookEventName,
        DeliveryStatusName,
    )),
    modifiers(&Authentication),
    tags(
        (name = "ingest", description = "Submitting records and following scans / Gửi bản ghi và theo dõi lần quét"),
        (name = "analytics", description = "The dashboard's reads / Truy vấn của bảng điều khiển"),
        (name = "admin", description = "Tenants, keys, dead letters, audit (admin key) / Tổ chức, khóa, bản ghi lỗi, kiểm toán (khóa quản trị)"),
        (name = "webhooks", description = "Scan notifications: endpoints and deliveries (admin, or the tenant's own key) / Thông báo lượt quét: điểm nhận và các lần gửi (khóa quản trị hoặc khóa của chính tổ chức)"),
        (name = "health", description = "Health, metrics and this document (no token) / Tình trạng, số liệu và tài liệu này (không cần mã truy cập)"),
    )
)]
struct ApiDoc;

/// The document for an engine running with `settings`, as JSON.
pub fn document_json(settings: &Settings) -> String {
    let mut document =
        serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document serializes to JSON");
    // The largest submissions are configured, not compiled in; their envelopes, like the
    // records, refuse unknown fields (the parser's `deny_unknown_fields`).
    for (schema, max_items) in [
        ("ScanSubmission", settings.ingest.max_scan_records),
        ("BatchSubmission", settings.ingest.max_batch_records),
    ] {
        if let Some(object) = document
            .pointer_mut(&format!("/components/schemas/{schema}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            object.insert("additionalProperties".into(), false.into());
        }
        let pointer = format!("/components/schemas/{schema}/properties/activities/maxItems");
        if let Some(value) = document.pointer_mut(&pointer) {
            *value = serde_json::Value::from(max_items);
        }
    }
    document.to_string()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    summary = "This OpenAPI document / Tài liệu OpenAPI này",
    description = "The API described in OpenAPI 3.1, generated from the engine's code. No \
                   token. — Mô tả API theo OpenAPI 3.1, sinh ra từ mã nguồn của hệ thống. Không \
                   cần mã truy cập.",
    responses((status = 200, description = "The document / Tài liệu", content_type = "application/json", body = Object))
)]
pub fn document_response(document: Bytes) -> HttpResponse {
    warp::reply::with_header(document.to_vec(), "content-type", "application/json").into_response()
}

/// The bearer scheme on every route but the public ones, with the 401 and 503 each can answer.
struct Authentication;

impl Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key minted by POST /admin/keys, or the configured bootstrap \
                         admin token. — Khóa API tạo bằng POST /admin/keys, hoặc mã quản trị \
                         khởi tạo trong cấu hình.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if PUBLIC_PATHS.contains(&path.as_str()) {
                continue;
            }
            for (operation, writes) in operations(item) {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                let responses = &mut operation.responses.responses;
                responses
                    .entry("401".into())
                    .or_insert_with(|| unauthorized().into());
                responses
                    .entry("503".into())
                    .or_insert_with(|| unavailable().into());
                if writes {
                    responses.entry("409".into()).or_insert_with(|| {
                        error_response(
                            "The request conflicts with stored data / Yêu cầu xung đột với dữ \
                             liệu đã lưu",
                        )
                        .into()
                    });
                    responses.entry("422".into()).or_insert_with(|| {
                        error_response(
                            "The database refused the request's data / Cơ sở dữ liệu từ chối \
                             dữ liệu của yêu cầu",
                        )
                        .into()
                    });
                }
            }
        }
    }
}

/// A path's operations, each with whether it writes.
fn operations(item: &mut PathItem) -> Vec<(&mut Operation, bool)> {
    let mut found = Vec::new();
    if let Some(operation) = item.get.as_mut() {
        found.push((operation, false));
    }
    for operation in [item.post.as_mut(), item.put.as_mut(), item.delete.as_mut()]
        .into_iter()
        .flatten()
    {
        found.push((operation, true));
    }
    found
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

fn unauthorized() -> Response {
    let mut response = error_response(
        "No token, or an unknown or revoked one / Thiếu mã truy cập, hoặc mã không hợp lệ hay đã \
         bị thu hồi",
    );
    response.headers.insert(
        "WWW-Authenticate".into(),
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("Bearer"))
            .build(),
    );
    response
}

fn unavailable() -> Response {
    let mut response = error_response(
        "Database unavailable or engine at capacity; nothing was changed, retry after \
         Retry-After / Cơ sở dữ liệu không khả dụng hoặc hệ thống quá tải; chưa có thay đổi nào, \
         hãy thử lại sau Retry-After",
    );
    response.headers.insert("Retry-After".into(), retry_after());
    response
}

fn retry_after() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .description(Some("Seconds / Số giây"))
        .build()
}

/// A string schema with a closed set of values.
fn string_enum(values: impl IntoIterator<Item = &'static str>, description: &str) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .description(Some(description))
            .build(),
    )
}

/// Declares a schema-only type for a string with a closed set of values.
macro_rules! string_enum_schema {
    ($type:ident, $name:literal, $description:literal, $values:expr) => {
        #[doc = $description]
        pub struct $type;

        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                RefOr::T(string_enum($values, $description))
            }
        }

        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_enum_schema!(
    WebhookEventName,
    "WebhookEvent",
    "An event a webhook endpoint subscribes to. — Sự kiện mà điểm nhận webhook đăng ký.",
    crate::store::webhooks::EVENTS
);
string_enum_schema!(
    DeliveryStatusName,
    "DeliveryStatus",
    "Where a webhook delivery is. — Trạng thái của một lần gửi webhook.",
    ["pending", "succeeded", "failed"]
);
string_enum_schema!(
    PriorityName,
    "Priority",
    "A submission's priority. — Mức ưu tiên của lần gửi.",
    Priority::ALL.map(Priority::as_str)
);
string_enum_schema!(
    ScanStatusName,
    "ScanStatus",
    "Where a scan is in its life. — Trạng thái của lần quét.",
    ScanStatus::ALL.map(ScanStatus::as_str)
);
string_enum_schema!(
    PdplCategoryName,
    "PdplCategory",
    "A PDPL data category. — Loại dữ liệu theo PDPL.",
    PdplCategory::ALL.map(PdplCategory::as_str)
);
string_enum_schema!(
    RegionName,
    "Region",
    "A region of Vietnam, or unassigned. — Miền của Việt Nam, hoặc chưa phân vùng.",
    Region::ALL.map(Region::as_str)
);
string_enum_schema!(
    TenantRegionName,
    "TenantRegion",
    "The region a tenant is registered in. — Miền mà tổ chức đăng ký.",
    Region::ALL
        .into_iter()
        .filter(|region| *region != Region::Unassigned)
        .map(Region::as_str)
);
string_enum_schema!(
    KeyScopeName,
    "KeyScope",
    "What a key may do: admin (everything), service (ingest and read for any tenant), tenant \
     (one tenant). — Phạm vi của khóa: admin (mọi thao tác), service (gửi và đọc cho mọi tổ \
     chức), tenant (một tổ chức).",
    ["admin", "service", "tenant"]
);
string_enum_schema!(
    AuditActionName,
    "AuditAction",
    "What an audit log entry records. — Hành động được ghi trong nhật ký kiểm toán.",
    AuditAction::NAMES
);

/// One record of a submission (SPEC section 2), with the bounds the record parser enforces.
/// Unknown fields make a record invalid; a string holding U+0000 too. An invalid record is
/// reported in the answer's `errors` and does not reject its neighbours.
pub struct Activity;

impl PartialSchema for Activity {
    fn schema() -> RefOr<Schema> {
        let text = |min: usize, max: usize| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(min))
                .max_length(Some(max))
                .pattern(Some(WITHOUT_NUL))
        };
        let list = |max_items: usize, item_max: usize| {
            ArrayBuilder::new()
                .items(text(1, item_max))
                .max_items(Some(max_items))
        };
        // An optional field may also be null, which reads as absent.
        let optional_text = |max: usize| {
            text(0, max).schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        };
        let schema = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A processing activity. — Một hoạt động xử lý dữ liệu cá nhân.",
            ))
            .property("activity_name", text(1, ACTIVITY_NAME_MAX_CHARS))
            .required("activity_name")
            .property(
                "pdpl_category",
                Ref::from_schema_name(PdplCategoryName::name()),
            )
            .required("pdpl_category")
            .property(
                "data_fields",
                list(DATA_FIELDS_MAX_ITEMS, DATA_FIELD_MAX_CHARS),
            )
            .required("data_fields")
            .property("purpose", optional_text(PURPOSE_MAX_CHARS))
            .property("legal_basis", optional_text(LEGAL_BASIS_MAX_CHARS))
            .property(
                "retention_period",
                optional_text(RETENTION_PERIOD_MAX_CHARS),
            )
            .property(
                "data_recipients",
                list(DATA_RECIPIENTS_MAX_ITEMS, DATA_RECIPIENT_MAX_CHARS)
                    .schema_type(SchemaType::from_iter([Type::Array, Type::Null])),
            )
            .additional_properties(Some(no_other_properties()))
            .build();
        RefOr::T(Schema::Object(schema))
    }
}

impl ToSchema for Activity {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Activity")
    }
}

fn no_other_properties() -> AdditionalProperties<Schema> {
    AdditionalProperties::FreeForm(false)
}

fn uuid_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).format(Some(
        utoipa::openapi::SchemaFormat::KnownFormat(KnownFormat::Uuid),
    ))
}

/// A `tenant_id` filter: a tenant's id, or empty for every tenant.
pub struct TenantFilter;

impl PartialSchema for TenantFilter {
    fn schema() -> RefOr<Schema> {
        let every_tenant = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(0));
        RefOr::T(Schema::AnyOf(
            AnyOfBuilder::new()
                .item(uuid_string())
                .item(every_tenant)
                .description(Some(
                    "A tenant id, or empty for every tenant. — Mã tổ chức, hoặc để trống cho mọi \
                     tổ chức.",
                ))
                .build(),
        ))
    }
}

impl ToSchema for TenantFilter {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TenantFilter")
    }
}

/// A text without U+0000 (PostgreSQL cannot store it).
const WITHOUT_NUL: &str = "^[^\\u0000]*$";

/// `POST /admin/keys` body: the `tenant` scope takes the `tenant_id` of a registered tenant,
/// the others none (or null).
pub struct NewKey;

impl PartialSchema for NewKey {
    fn schema() -> RefOr<Schema> {
        let name = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(200))
                .pattern(Some(WITHOUT_NUL))
                .description(Some("A label for people. — Nhãn để người dùng nhận biết."))
        };
        let platform_key = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "scope",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["admin", "service"])),
            )
            .required("scope")
            .property("tenant_id", ObjectBuilder::new().schema_type(Type::Null))
            .property("name", name())
            .additional_properties(Some(no_other_properties()));
        let tenant_key = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "scope",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["tenant"])),
            )
            .required("scope")
            .property("tenant_id", uuid_string())
            .required("tenant_id")
            .property("name", name())
            .additional_properties(Some(no_other_properties()));
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(platform_key)
                .item(tenant_key)
                .description(Some(
                    "An admin or service key, or a key for one tenant. — Khóa quản trị hoặc \
                     dịch vụ, hoặc khóa cho một tổ chức.",
                ))
                .build(),
        ))
    }
}

impl ToSchema for NewKey {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewKey")
    }
}

/// The bounds of every tenant limit.
pub const LIMIT_MIN: i64 = 1;
pub const LIMIT_MAX: i64 = 1_000_000_000;

/// `PUT /admin/tenants/{tenant_id}/limits` body: at least one limit that is not null (a null
/// limit, like a missing one, stays as it is).
pub struct LimitsChangeBody;

impl PartialSchema for LimitsChangeBody {
    fn schema() -> RefOr<Schema> {
        const LIMITS: [&str; 3] = ["records_per_second", "burst", "max_backlog_records"];
        let limit = |types: SchemaType| {
            ObjectBuilder::new()
                .schema_type(types)
                .minimum(Some(LIMIT_MIN))
                .maximum(Some(LIMIT_MAX))
        };
        let mut fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(no_other_properties()));
        let mut one_given = AnyOfBuilder::new();
        for name in LIMITS {
            fields = fields.property(
                name,
                limit(SchemaType::from_iter([Type::Integer, Type::Null])),
            );
            one_given = one_given.item(
                ObjectBuilder::new()
                    .property(name, limit(SchemaType::Type(Type::Integer)))
                    .required(name),
            );
        }
        RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(fields)
                .item(one_given)
                .description(Some(
                    "New limits, at least one; the others stay as they are. — Giới hạn mới, ít \
                     nhất một; các giới hạn khác giữ nguyên.",
                ))
                .build(),
        ))
    }
}

impl ToSchema for LimitsChangeBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LimitsChange")
    }
}
