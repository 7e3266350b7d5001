//! The warp facade: routes, body limits, and the mapping of every rejection to a bilingual
//! error.
//!
//! **Invariant:** only `http/` knows warp and the JSON shapes of the API. Handlers never return
//! a rejection for a request they recognise: they answer with a response or an [`ApiError`],
//! and [`recover`] turns warp's own rejections (unknown route, wrong method) into the same
//! error body, so no request ever gets a bare 500.

mod admin;
pub mod admission;
mod analytics;
mod audit;
mod auth;
pub mod error;
mod headers;
mod health;
mod ingest;
pub mod listener;
pub mod openapi;
mod webhooks;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use self::error::ApiError;
use self::headers::{header_text, HeaderText};
use crate::actors::Engine;
use crate::config::Settings;
use crate::domain::client_text;
use crate::memory::BodyBuffers;
use crate::store::{Pool, ReadPool};

/// What every handler may use.
pub struct AppState {
    pub settings: Settings,
    /// The request pool: stages submissions (the "write pool" of `/health/connection-pools`).
    pub pool: Pool,
    /// Every dashboard read: scans and analytics, as the row-level-secured reader role.
    pub read_pool: ReadPool,
    pub engine: Engine,
    /// Cleared at shutdown: submissions get 503 from then on.
    pub accepting: AtomicBool,
    /// SHA-256 of the configured bootstrap admin token, if any.
    pub bootstrap_token_hash_opt: Option<[u8; 32]>,
    /// Renders `GET /metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Bounds the memory of submissions being read, parsed and staged (see [`admit`]).
    pub admission: Arc<admission::AdmissionControl>,
    /// One permit per core: submissions parsed at once.
    pub parsing: Arc<crate::submission::ParsingSlots>,
    /// Buffers of large submission bodies, kept between submissions.
    pub bodies: Arc<crate::memory::BodyBuffers>,
    /// This instance's id among the instances sharing the database.
    pub instance_id: String,
    /// Forwards a synchronous batch to the instance that owns its tenant.
    pub forwarding: reqwest::Client,
}

/// Asks the client to close the connection after this response when the request's body sat
/// unread while it waited for admission. Linux can keep the time of the first zero-window probe
/// of such a wait on the client's socket, and a client with `TCP_USER_TIMEOUT` (reqwest sets
/// 30 s by default) then has that connection aborted at its next zero window, on a later
/// request. A fresh connection per stalled request avoids it; the cost is one TCP handshake.
pub fn close_connection_if(waited: bool, mut response: Response) -> Response {
    if waited {
        response.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Admits a submission to the admission budget (see [`admission`]), waiting at most
/// `ingest.admission_wait_secs`; refused, it gets 503 `engine_saturated` with the `Retry-After`
/// the queue suggests. A body without a declared length is charged as if it were as large as
/// the route allows.
pub async fn admit(
    state: &AppState,
    declared_length_opt: Option<u64>,
    body_limit: u64,
) -> Result<admission::Admission, ApiError> {
    let declared = declared_length_opt.unwrap_or(body_limit).min(body_limit);
    let wait = std::time::Duration::from_secs(state.settings.ingest.admission_wait_secs);
    state
        .admission
        .admit(declared, wait)
        .await
        .map_err(|refusal| {
            let reason = if refusal.after_waiting {
                "waited"
            } else {
                "estimated"
            };
            metrics::counter!(crate::metrics::ADMISSION_REFUSALS, "reason" => reason).increment(1);
            ApiError::engine_saturated().with_retry_after(refusal.retry_after_secs)
        })
}

impl AppState {
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }
}

pub type Query = HashMap<String, String>;

/// A method the API's routes answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteMethod {
    Get,
    Post,
    Put,
    Delete,
}

impl RouteMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Get => "GET",
            RouteMethod::Post => "POST",
            RouteMethod::Put => "PUT",
            RouteMethod::Delete => "DELETE",
        }
    }

    fn filter(self) -> warp::filters::BoxedFilter<()> {
        match self {
            RouteMethod::Get => warp::get().boxed(),
            RouteMethod::Post => warp::post().boxed(),
            RouteMethod::Put => warp::put().boxed(),
            RouteMethod::Delete => warp::delete().boxed(),
        }
    }
}

/// One route: a method and a path template, where `{name}` is one path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: RouteMethod,
    pub template: &'static str,
}

const fn route(method: RouteMethod, template: &'static str) -> Route {
    Route { method, template }
}

/// Every route the engine answers. [`routes`] builds the router from this table (and refuses
/// to start if a route is built that is not listed, or listed and not built), metrics label
/// requests with its templates, and the OpenAPI document's drift test compares it with the
/// document's paths: the three cannot disagree.
pub const ROUTES: &[Route] = &[
    route(RouteMethod::Get, "/health"),
    route(RouteMethod::Get, "/health/database"),
    route(RouteMethod::Get, "/health/connection-pools"),
    route(RouteMethod::Get, "/metrics"),
    route(RouteMethod::Get, "/openapi.json"),
    route(RouteMethod::Post, "/data-scans"),
    route(RouteMethod::Get, "/data-scans"),
    route(RouteMethod::Get, "/data-scans/{scan_id}"),
    route(RouteMethod::Post, "/batch/processing-activities"),
    route(RouteMethod::Get, "/analytics/compliance-summary"),
    route(RouteMethod::Get, "/analytics/processing-activities"),
    route(RouteMethod::Get, "/analytics/regional-summary"),
    route(RouteMethod::Post, "/admin/tenants"),
    route(RouteMethod::Get, "/admin/tenants"),
    route(RouteMethod::Get, "/admin/tenants/{tenant_id}"),
    route(RouteMethod::Put, "/admin/tenants/{tenant_id}/limits"),
    route(RouteMethod::Post, "/admin/tenants/{tenant_id}/pause"),
    route(RouteMethod::Post, "/admin/tenants/{tenant_id}/resume"),
    route(RouteMethod::Post, "/admin/keys"),
    route(RouteMethod::Delete, "/admin/keys/{key_id}"),
    route(RouteMethod::Get, "/admin/dead-letters"),
    route(
        RouteMethod::Post,
        "/admin/dead-letters/{dead_letter_id}/replay",
    ),
    route(RouteMethod::Get, "/admin/audit"),
    route(RouteMethod::Get, "/admin/audit/archives"),
    route(RouteMethod::Get, "/admin/cluster"),
    route(RouteMethod::Post, "/admin/tenants/{tenant_id}/webhooks"),
    route(RouteMethod::Get, "/admin/tenants/{tenant_id}/webhooks"),
    route(
        RouteMethod::Delete,
        "/admin/tenants/{tenant_id}/webhooks/{endpoint_id}",
    ),
    route(
        RouteMethod::Get,
        "/admin/tenants/{tenant_id}/webhook-deliveries",
    ),
    route(
        RouteMethod::Post,
        "/admin/tenants/{tenant_id}/webhook-deliveries/{delivery_id}/redeliver",
    ),
];

/// The parameter segments of `segments` if they match `template`, else `None`. A parameter
/// matches one non-empty segment, as it is sent (percent-encoded).
fn match_template<'a>(
    template: &str,
    mut segments: impl Iterator<Item = &'a str>,
) -> Option<Vec<String>> {
    let mut parameters = Vec::new();
    for expected in template.trim_start_matches('/').split('/') {
        let segment = segments.next()?;
        if expected.starts_with('{') {
            if segment.is_empty() {
                return None;
            }
            parameters.push(segment.to_string());
        } else if segment != expected {
            return None;
        }
    }
    segments.next().is_none().then_some(parameters)
}

/// The route template of a request path, for metrics and logs: a bounded set of values
/// whatever the path (`"other"` for a path no route has).
pub fn route_template(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|route| match_template(route.template, path.trim_matches('/').split('/')).is_some())
        .map_or("other", |route| route.template)
}

/// Builds the filters of [`ROUTES`], and remembers which it built.
#[derive(Default)]
struct RouteBuilder {
    built: std::cell::RefCell<Vec<Route>>,
}

impl RouteBuilder {
    /// The path and method of a route without parameters.
    fn fixed(
        &self,
        method: RouteMethod,
        template: &'static str,
    ) -> impl Filter<Extract = (), Error = Rejection> + Clone {
        self.matching(method, template)
            .map(|_: Vec<String>| ())
            .untuple_one()
    }

    /// The path and method of a route with one parameter, which it extracts.
    fn with_parameter(
        &self,
        method: RouteMethod,
        template: &'static str,
    ) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
        self.matching(method, template)
            .map(|mut parameters: Vec<String>| parameters.pop().unwrap_or_default())
    }

    /// The path and method of a route with two parameters, which it extracts in order.
    fn with_two_parameters(
        &self,
        method: RouteMethod,
        template: &'static str,
    ) -> impl Filter<Extract = (String, String), Error = Rejection> + Clone {
        self.matching(method, template)
            .map(|parameters: Vec<String>| {
                let mut parameters = parameters.into_iter();
                (
                    parameters.next().unwrap_or_default(),
                    parameters.next().unwrap_or_default(),
                )
            })
            .untuple_one()
    }

    fn matching(
        &self,
        method: RouteMethod,
        template: &'static str,
    ) -> impl Filter<Extract = (Vec<String>,), Error = Rejection> + Clone {
        self.built.borrow_mut().push(route(method, template));
        warp::path::full()
            .and_then(move |path: warp::path::FullPath| async move {
                let segments_opt = path.as_str().strip_prefix('/').map(|rest| rest.split('/'));
                segments_opt
                    .and_then(|segments| match_template(template, segments))
                    .ok_or_else(warp::reject::not_found)
            })
            .and(method.filter())
    }

    /// What differs between the routes built and [`ROUTES`], if anything.
    fn differences_from_table(self) -> Option<String> {
        let built = self.built.into_inner();
        let unlisted: Vec<&Route> = built
            .iter()
            .filter(|route| !ROUTES.contains(route))
            .collect();
        let unbuilt: Vec<&Route> = ROUTES
            .iter()
            .filter(|route| !built.contains(route))
            .collect();
        (!unlisted.is_empty() || !unbuilt.is_empty()).then(|| {
            format!("built but not in ROUTES: {unlisted:?}; in ROUTES but not built: {unbuilt:?}")
        })
    }
}

/// All routes.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let builder = RouteBuilder::default();
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let query = warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| parse_query(&raw));

    let health = builder
        .fixed(RouteMethod::Get, "/health")
        .map(health::liveness)
        .boxed();
    let health_database = builder
        .fixed(RouteMethod::Get, "/health/database")
        .and(with_state.clone())
        .then(health::database)
        .boxed();
    let health_connection_pools = builder
        .fixed(RouteMethod::Get, "/health/connection-pools")
        .and(with_state.clone())
        .map(health::connection_pools)
        .boxed();

    let metrics_route = builder
        .fixed(RouteMethod::Get, "/metrics")
        .and(with_state.clone())
        .map(render_metrics)
        .boxed();
    let document = Bytes::from(openapi::document_json(&state.settings));
    let openapi_route = builder
        .fixed(RouteMethod::Get, "/openapi.json")
        .map(move || openapi::document_response(document.clone()))
        .boxed();
    let authorization = header_text("authorization");
    let json_body = |limit: u64| {
        header_text("content-type")
            .and(header_text("content-length"))
            .and(warp::body::stream())
            .then(move |content_type, content_length, body| {
                read_json_body(content_type, content_length, body, limit)
            })
    };
    let small_body = json_body(ADMIN_BODY_LIMIT);
    let pending_body = header_text("content-type")
        .and(header_text("content-length"))
        .and(warp::body::stream())
        .map(PendingBody::new);

    let submit_scan = builder
        .fixed(RouteMethod::Post, "/data-scans")
        .and(with_state.clone())
        .and(authorization)
        .and(pending_body)
        .then(ingest::submit_scan)
        .boxed();
    let get_scan = builder
        .with_parameter(RouteMethod::Get, "/data-scans/{scan_id}")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(ingest::get_scan)
        .boxed();
    let list_scans = builder
        .fixed(RouteMethod::Get, "/data-scans")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(ingest::list_scans)
        .boxed();
    let submit_batch = builder
        .fixed(RouteMethod::Post, "/batch/processing-activities")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .and(header_text(ingest::FORWARDED_BY))
        .and(pending_body)
        .then(ingest::submit_batch)
        .boxed();
    let compliance_summary = builder
        .fixed(RouteMethod::Get, "/analytics/compliance-summary")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(analytics::compliance_summary)
        .boxed();
    let processing_activities = builder
        .fixed(RouteMethod::Get, "/analytics/processing-activities")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(analytics::processing_activities)
        .boxed();

    let regional_summary = builder
        .fixed(RouteMethod::Get, "/analytics/regional-summary")
        .and(with_state.clone())
        .and(authorization)
        .then(analytics::regional_summary)
        .boxed();

    let create_tenant = builder
        .fixed(RouteMethod::Post, "/admin/tenants")
        .and(with_state.clone())
        .and(authorization)
        .and(small_body)
        .then(admin::create_tenant)
        .boxed();
    let list_tenants = builder
        .fixed(RouteMethod::Get, "/admin/tenants")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::list_tenants)
        .boxed();
    let show_tenant = builder
        .with_parameter(RouteMethod::Get, "/admin/tenants/{tenant_id}")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::show_tenant)
        .boxed();
    let set_limits = builder
        .with_parameter(RouteMethod::Put, "/admin/tenants/{tenant_id}/limits")
        .and(with_state.clone())
        .and(authorization)
        .and(small_body)
        .then(admin::set_limits)
        .boxed();
    let pause = builder
        .with_parameter(RouteMethod::Post, "/admin/tenants/{tenant_id}/pause")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::pause)
        .boxed();
    let resume = builder
        .with_parameter(RouteMethod::Post, "/admin/tenants/{tenant_id}/resume")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::resume)
        .boxed();
    let mint_key = builder
        .fixed(RouteMethod::Post, "/admin/keys")
        .and(with_state.clone())
        .and(authorization)
        .and(small_body)
        .then(admin::mint_key)
        .boxed();
    let revoke_key = builder
        .with_parameter(RouteMethod::Delete, "/admin/keys/{key_id}")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::revoke_key)
        .boxed();

    let list_dead_letters = builder
        .fixed(RouteMethod::Get, "/admin/dead-letters")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(admin::list_dead_letters)
        .boxed();
    let replay_dead_letter = builder
        .with_parameter(
            RouteMethod::Post,
            "/admin/dead-letters/{dead_letter_id}/replay",
        )
        .and(with_state.clone())
        .and(authorization)
        .then(admin::replay_dead_letter)
        .boxed();

    let read_audit = builder
        .fixed(RouteMethod::Get, "/admin/audit")
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(audit::read_audit)
        .boxed();
    let list_instances = builder
        .fixed(RouteMethod::Get, "/admin/cluster")
        .and(with_state.clone())
        .and(authorization)
        .then(admin::list_instances)
        .boxed();
    let list_audit_archives = builder
        .fixed(RouteMethod::Get, "/admin/audit/archives")
        .and(with_state.clone())
        .and(authorization)
        .then(audit::list_archives)
        .boxed();

    let register_webhook = builder
        .with_parameter(RouteMethod::Post, "/admin/tenants/{tenant_id}/webhooks")
        .and(with_state.clone())
        .and(authorization)
        .and(small_body)
        .then(webhooks::register)
        .boxed();
    let list_webhooks = builder
        .with_parameter(RouteMethod::Get, "/admin/tenants/{tenant_id}/webhooks")
        .and(with_state.clone())
        .and(authorization)
        .then(webhooks::list)
        .boxed();
    let delete_webhook = builder
        .with_two_parameters(
            RouteMethod::Delete,
            "/admin/tenants/{tenant_id}/webhooks/{endpoint_id}",
        )
        .and(with_state.clone())
        .and(authorization)
        .then(webhooks::delete)
        .boxed();
    let list_webhook_deliveries = builder
        .with_parameter(
            RouteMethod::Get,
            "/admin/tenants/{tenant_id}/webhook-deliveries",
        )
        .and(with_state.clone())
        .and(authorization)
        .and(query)
        .then(webhooks::list_deliveries)
        .boxed();
    let redeliver_webhook = builder
        .with_two_parameters(
            RouteMethod::Post,
            "/admin/tenants/{tenant_id}/webhook-deliveries/{delivery_id}/redeliver",
        )
        .and(with_state.clone())
        .and(authorization)
        .then(webhooks::redeliver)
        .boxed();
    let webhook_routes = register_webhook
        .or(list_webhooks)
        .unify()
        .or(delete_webhook)
        .unify()
        .or(list_webhook_deliveries)
        .unify()
        .or(redeliver_webhook)
        .unify()
        .boxed();

    let admin_routes = create_tenant
        .or(list_tenants)
        .unify()
        .or(show_tenant)
        .unify()
        .or(set_limits)
        .unify()
        .or(pause)
        .unify()
        .or(resume)
        .unify()
        .or(mint_key)
        .unify()
        .or(revoke_key)
        .unify()
        .or(list_dead_letters)
        .unify()
        .or(replay_dead_letter)
        .unify()
        .or(read_audit)
        .unify()
        .or(list_audit_archives)
        .unify()
        .or(list_instances)
        .unify()
        .or(webhook_routes)
        .unify()
        .boxed();

    let all_routes = health
        .or(health_database)
        .unify()
        .or(metrics_route)
        .unify()
        .or(openapi_route)
        .unify()
        .or(health_connection_pools)
        .unify()
        .or(submit_scan)
        .unify()
        .or(get_scan)
        .unify()
        .or(list_scans)
        .unify()
        .or(submit_batch)
        .unify()
        .or(admin_routes)
        .unify()
        .or(compliance_summary)
        .unify()
        .or(processing_activities)
        .unify()
        .or(regional_summary)
        .unify()
        .recover(recover)
        .unify();

    // A programming error, caught by every test that starts the engine.
    if let Some(differences) = builder.differences_from_table() {
        panic!("the router and http::ROUTES differ: {differences}");
    }

    let request_context = header_text("x-request-id").map(|incoming: HeaderText| RequestContext {
        request_id: incoming
            .value_opt()
            .filter(|incoming| is_acceptable_request_id(incoming))
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string),
        started: Instant::now(),
    });
    request_context
        .and(warp::method())
        .and(warp::path::full())
        .and(all_routes)
        .map(finish_request)
}

/// The Prometheus text exposition of the engine's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics / Số liệu Prometheus",
    description = "Prometheus text format; no personal data, bounded labels. No token. — Định \
                   dạng văn bản Prometheus; không có dữ liệu cá nhân, nhãn có giới hạn. Không cần \
                   mã truy cập.",
    responses((status = 200, description = "The metrics / Các số liệu", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8"))
)]
pub fn render_metrics(state: Arc<AppState>) -> Response {
    warp::reply::with_header(
        state.metrics.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response()
}

/// Every request's id (the caller's one `x-request-id` when it is sensible, else a new UUIDv7)
/// and start time.
struct RequestContext {
    request_id: String,
    started: Instant,
}

/// A caller's request id is echoed only if it is short, printable ASCII.
fn is_acceptable_request_id(candidate: &str) -> bool {
    (1..=128).contains(&candidate.len()) && candidate.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Returns the request id in `x-request-id`, logs one access line, and records the request's
/// metrics, labelled by route template, never by path.
fn finish_request(
    context: RequestContext,
    method: warp::http::Method,
    path: warp::path::FullPath,
    reply: impl Reply,
) -> Response {
    let mut response = reply.into_response();
    if let Ok(value) = warp::http::HeaderValue::from_str(&context.request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = context.started.elapsed();
    let route = route_template(path.as_str());
    let status = response.status().as_u16();
    tracing::info!(
        request_id = %context.request_id,
        method = %method,
        route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(crate::metrics::HTTP_REQUEST_DURATION, "route" => route, "method" => method.to_string())
        .record(elapsed.as_secs_f64());
    response
}

/// Largest body of an admin request, in bytes.
const ADMIN_BODY_LIMIT: u64 = 64 * 1024;

/// Answers with the handler's response or its error.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

/// Parses a small JSON object body into `T`, with a bilingual 400 naming serde's complaint.
///
/// Only an object is accepted: serde reads a struct from an array too, by position, so
/// `[5, 10, 100]` would set three limits without naming one.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "malformed_request",
            "the request body must be a JSON object",
            "nội dung yêu cầu phải là một đối tượng JSON",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        // serde's complaint may quote the body ("unknown variant `…`").
        let reason = client_text::shown(&error.to_string(), client_text::MESSAGE_MAX_CHARS);
        ApiError::bad_request(
            "malformed_request",
            format!("the request body is not valid JSON for this route: {reason}"),
            format!("nội dung yêu cầu không phải JSON hợp lệ cho đường dẫn này: {reason}"),
        )
    })
}

/// A query string as a map; malformed percent-encoding leaves the raw text.
fn parse_query(raw: &str) -> Query {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key), decode_component(value))
        })
        .collect()
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        match bytes[position] {
            b'+' => decoded.push(b' '),
            b'%' if position + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[position + 1..position + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        decoded.push(byte);
                        position += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        position += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Refuses a body whose declared or actual size exceeds `limit`, and a non-JSON content type.
pub async fn read_json_body(
    content_type: HeaderText,
    content_length: HeaderText,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    limit: u64,
) -> Result<Bytes, ApiError> {
    check_body_headers(&content_type, &content_length, limit)?;
    let declared_opt = declared_length(&content_length);
    collect_body(body, declared_opt, limit, None).await
}

/// A submission's body, not yet read: it is read only once the submission is admitted.
pub struct PendingBody {
    pub content_type: HeaderText,
    pub content_length: HeaderText,
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, warp::Error>>,
}

impl PendingBody {
    fn new(
        content_type: HeaderText,
        content_length: HeaderText,
        stream: impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,
    ) -> PendingBody {
        use futures_util::TryStreamExt;
        PendingBody {
            content_type,
            content_length,
            stream: StreamExt::boxed(stream.map_ok(|mut part| {
                let remaining = part.remaining();
                part.copy_to_bytes(remaining)
            })),
        }
    }

    /// The declared length, if any and well-formed.
    pub fn declared_length_opt(&self) -> Option<u64> {
        declared_length(&self.content_length)
    }

    /// Checks the headers, then reads at most `limit` bytes, into a buffer from `buffers`
    /// (give it back there once the body is parsed).
    pub async fn read(self, limit: u64, buffers: &BodyBuffers) -> Result<Bytes, ApiError> {
        check_body_headers(&self.content_type, &self.content_length, limit)?;
        let declared_opt = self.declared_length_opt();
        collect_body(self.stream, declared_opt, limit, Some(buffers)).await
    }
}

/// Refuses a non-JSON, non-ASCII or repeated content type (415) and a declared length over
/// `limit` (413). No content type at all is read as JSON.
pub fn check_body_headers(
    content_type: &HeaderText,
    content_length: &HeaderText,
    limit: u64,
) -> Result<(), ApiError> {
    match content_type {
        HeaderText::NotAscii => {
            return Err(unsupported_media_type(
                "the Content-Type header must be ASCII: application/json",
                "tiêu đề Content-Type chỉ được chứa ký tự ASCII: application/json",
            ))
        }
        HeaderText::Repeated => {
            return Err(unsupported_media_type(
                "send exactly one Content-Type header: application/json",
                "chỉ được gửi đúng một tiêu đề Content-Type: application/json",
            ))
        }
        HeaderText::Absent | HeaderText::One(_) => {}
    }
    if let Some(content_type) = content_type.value_opt() {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            let shown = client_text::shown(&essence, client_text::NAME_MAX_CHARS);
            return Err(unsupported_media_type(
                format!("the body must be application/json, not {shown}"),
                format!("nội dung phải là application/json, không phải {shown}"),
            ));
        }
    }
    if let Some(length) = declared_length(content_length) {
        if length > limit {
            return Err(ApiError::payload_too_large(limit));
        }
    }
    Ok(())
}

fn unsupported_media_type(error: impl Into<String>, error_vi: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        error,
        error_vi,
    )
}

/// A well-formed `content-length` (the HTTP server already refused a malformed or conflicting
/// one before the request got here).
fn declared_length(content_length: &HeaderText) -> Option<u64> {
    content_length
        .value_opt()
        .and_then(|text| text.trim().parse().ok())
}

/// Reads the body into one buffer, sized up front from the declared length (at most `limit`)
/// so a multi-megabyte body is not copied from buffer to buffer as it grows.
async fn collect_body(
    mut body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    declared_length_opt: Option<u64>,
    limit: u64,
    buffers_opt: Option<&BodyBuffers>,
) -> Result<Bytes, ApiError> {
    let capacity = usize::try_from(declared_length_opt.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut collected = match buffers_opt {
        Some(buffers) => buffers.take(capacity),
        None => {
            let mut fresh = BytesMut::with_capacity(capacity);
            crate::memory::advise_huge_pages(fresh.spare_capacity_mut());
            fresh
        }
    };
    while let Some(part) = body.next().await {
        let mut part = part.map_err(|_| {
            ApiError::bad_request(
                "body_unreadable",
                "the request body could not be read",
                "không đọc được nội dung yêu cầu",
            )
        })?;
        if collected.len() as u64 + part.remaining() as u64 > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        while part.has_remaining() {
            let piece = part.chunk();
            collected.extend_from_slice(piece);
            let advanced = piece.len();
            part.advance(advanced);
        }
    }
    Ok(collected.freeze())
}

/// Turns warp's rejections into the API's error body.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        ApiError::not_found()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this route",
            "phương thức này không được phép trên đường dẫn này",
        )
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
    {
        ApiError::bad_request(
            "invalid_header",
            "a request header is invalid",
            "một tiêu đề yêu cầu không hợp lệ",
        )
    } else {
        tracing::warn!(?rejection, "unexpected rejection");
        ApiError::bad_request(
            "bad_request",
            "the request is not valid",
            "yêu cầu không hợp lệ",
        )
    };
    Ok(error.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_labelled_by_their_route_template() {
        assert_eq!(
            route_template("/data-scans/0196b2f4-1111-7000-8000-000000000000"),
            "/data-scans/{scan_id}"
        );
        assert_eq!(
            route_template("/admin/tenants/x/limits"),
            "/admin/tenants/{tenant_id}/limits"
        );
        assert_eq!(route_template("/../../etc/passwd"), "other");
        assert_eq!(route_template("/health"), "/health");
        assert_eq!(route_template("/health/"), "/health");
        assert_eq!(route_template("/admin/tenants//limits"), "other");
    }

    #[test]
    fn a_template_matches_whole_segments_only() {
        let segments = |path: &'static str| path.split('/');
        assert_eq!(
            match_template("/admin/keys/{key_id}", segments("admin/keys/abc")),
            Some(vec!["abc".to_string()])
        );
        assert_eq!(
            match_template("/admin/keys/{key_id}", segments("admin/keys/")),
            None
        );
        assert_eq!(
            match_template("/admin/keys/{key_id}", segments("admin/keys/a/b")),
            None
        );
        assert_eq!(match_template("/admin/keys", segments("admin/key")), None);
        assert_eq!(
            match_template("/admin/keys", segments("admin/keys")),
            Some(vec![])
        );
    }

    #[test]
    fn queries_are_decoded() {
        let query = parse_query(
            "tenant_id=abc&status=completed_with_errors&name=H%E1%BB%93+s%C6%A1&bad=%zz&flag",
        );
        assert_eq!(query["tenant_id"], "abc");
        assert_eq!(query["name"], "Hồ sơ");
        assert_eq!(query["bad"], "%zz");
        assert_eq!(query["flag"], "");
        assert_eq!(
            parse_query("x=%4"),
            HashMap::from([("x".to_string(), "%4".to_string())])
        );
    }
}
