//! Hostile input as a generated matrix: every route × every request header × {missing, empty,
//! non-ASCII, repeated}, every path × every method, and every string field and field name of a
//! record × {U+0000, a lone surrogate, 1 MiB, bidirectional and zero-width characters}. Each
//! case asserts its status and, for an error, the bilingual body; the record cases also assert
//! that the valid records around the hostile one were written. Requests are written by hand on
//! a raw connection, so a header can be anything a client can send.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{accepted_scan_id, activity, spawn_app, TestApp, BOOTSTRAP_ADMIN_TOKEN};

/// What came back on a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} body is not JSON ({error}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request with exactly `header_lines` (each `name: value` bytes, no line end) and
/// `body`, on its own connection (`connection: close`), and reads the whole answer.
async fn raw_request(
    app: &TestApp,
    method: &str,
    path: &str,
    header_lines: &[Vec<u8>],
    body: &[u8],
) -> RawResponse {
    let address = app.address.trim_start_matches("http://");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n")
            .into_bytes();
    for line in header_lines {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        // The engine may close before reading a body it refused: what was sent is enough.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 60 s"));
    parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "{method} {path}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        )
    })
}

fn parse_response(answer: &[u8]) -> Option<RawResponse> {
    let head_end = answer.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().as_bytes().to_vec()))
        .collect();
    let rest = &answer[head_end + 4..];
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case(b"chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|window| window == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Asserts an error answer: its status, its code and both languages, with nothing a client
/// or a log would choke on.
fn assert_bilingual_error(case: &str, response: &RawResponse, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "{case}: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert_eq!(body["code"], code, "{case}: {body}");
    for language in ["error", "error_vi"] {
        let text = body[language].as_str().unwrap_or("");
        assert!(!text.is_empty(), "{case}: no {language}: {body}");
        assert_displayable(case, text);
    }
}

/// No character a stored or echoed message must not hold: controls (U+0000 among them),
/// bidirectional controls, zero-width characters. And never at length.
fn assert_displayable(case: &str, text: &str) {
    let forbidden = |character: char| {
        character.is_control()
            || matches!(character, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    assert!(
        !text.chars().any(forbidden),
        "{case}: a message holds a raw control or invisible character: {text:?}"
    );
    assert!(
        text.chars().count() < 1_000,
        "{case}: a message of {} characters",
        text.chars().count()
    );
}

/// One route of the API, with a request that succeeds.
struct Route {
    method: &'static str,
    path: String,
    body_opt: Option<String>,
    success: u16,
    authenticated: bool,
}

impl Route {
    fn new(method: &'static str, path: impl Into<String>, success: u16) -> Route {
        Route {
            method,
            path: path.into(),
            body_opt: None,
            success,
            authenticated: true,
        }
    }

    fn with_body(mut self, body: Value) -> Route {
        self.body_opt = Some(body.to_string());
        self
    }

    fn public(mut self) -> Route {
        self.authenticated = false;
        self
    }
}

/// Every route, each with a request that succeeds for `tenant` (which exists) and for `paused`
/// (which the pause and resume routes switch).
fn every_route(tenant: Uuid, paused: Uuid) -> Vec<Route> {
    let records = json!([activity(0), activity(1)]);
    vec![
        Route::new("GET", "/health", 200).public(),
        Route::new("GET", "/health/database", 200).public(),
        Route::new("GET", "/health/connection-pools", 200).public(),
        Route::new("GET", "/metrics", 200).public(),
        Route::new("POST", "/data-scans", 202)
            .with_body(json!({ "tenant_id": tenant, "activities": records })),
        Route::new(
            "GET",
            format!("/data-scans/{}?tenant_id={tenant}", Uuid::new_v4()),
            404,
        ),
        Route::new("GET", format!("/data-scans?tenant_id={tenant}"), 200),
        Route::new(
            "POST",
            format!("/batch/processing-activities?tenant_id={tenant}"),
            201,
        )
        .with_body(json!({ "activities": records })),
        Route::new(
            "GET",
            format!("/analytics/compliance-summary?tenant_id={tenant}"),
            200,
        ),
        Route::new(
            "GET",
            format!("/analytics/processing-activities?tenant_id={tenant}"),
            200,
        ),
        Route::new("POST", "/admin/tenants", 201).with_body(json!({ "name": "Công ty Hà Nội" })),
        Route::new("GET", "/admin/tenants", 200),
        Route::new("GET", format!("/admin/tenants/{tenant}"), 200),
        Route::new("PUT", format!("/admin/tenants/{tenant}/limits"), 200)
            .with_body(json!({ "records_per_second": 100_000 })),
        Route::new("POST", format!("/admin/tenants/{paused}/pause"), 200),
        Route::new("POST", format!("/admin/tenants/{paused}/resume"), 200),
        Route::new("POST", "/admin/keys", 201).with_body(json!({ "scope": "service" })),
        Route::new("DELETE", format!("/admin/keys/{}", Uuid::new_v4()), 404),
        Route::new(
            "GET",
            format!("/admin/dead-letters?tenant_id={tenant}"),
            200,
        ),
        Route::new("POST", "/admin/dead-letters/987654321/replay", 404),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    Authorization,
    ContentType,
    ContentLength,
    RequestId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Missing,
    Empty,
    NotAscii,
    Repeated,
}

const HEADERS: [Header; 4] = [
    Header::Authorization,
    Header::ContentType,
    Header::ContentLength,
    Header::RequestId,
];
const VARIANTS: [Variant; 4] = [
    Variant::Missing,
    Variant::Empty,
    Variant::NotAscii,
    Variant::Repeated,
];

/// The header lines of `route`'s request with `header` replaced by its `variant`.
fn header_lines(route: &Route, header: Header, variant: Variant) -> Vec<Vec<u8>> {
    let body_length = route.body_opt.as_ref().map(String::len);
    let normal = |which: Header| -> Option<Vec<u8>> {
        match which {
            Header::Authorization => Some(format!("authorization: Bearer {BOOTSTRAP_ADMIN_TOKEN}")),
            Header::ContentType => body_length.map(|_| "content-type: application/json".into()),
            Header::ContentLength => body_length.map(|length| format!("content-length: {length}")),
            Header::RequestId => Some("x-request-id: hostile-matrix".into()),
        }
        .map(String::into_bytes)
    };
    let name = match header {
        Header::Authorization => "authorization",
        Header::ContentType => "content-type",
        Header::ContentLength => "content-length",
        Header::RequestId => "x-request-id",
    };
    let mut lines: Vec<Vec<u8>> = HEADERS
        .iter()
        .filter(|which| **which != header)
        .filter_map(|which| normal(*which))
        .collect();
    match variant {
        Variant::Missing => {}
        Variant::Empty => lines.push(format!("{name}: ").into_bytes()),
        Variant::NotAscii => {
            let value = match header {
                Header::Authorization => "Bearer tökén",
                Header::ContentType => "application/json; charset=ütf-8",
                Header::ContentLength => "１２",
                Header::RequestId => "yêu-cầu-1",
            };
            lines.push(format!("{name}: {value}").into_bytes());
        }
        Variant::Repeated => {
            // The same sensible value twice; for a body-less request, a length of 0.
            let line = normal(header).unwrap_or_else(|| match header {
                Header::ContentLength => b"content-length: 0".to_vec(),
                _ => format!("{name}: application/json").into_bytes(),
            });
            lines.push(line.clone());
            lines.push(line);
        }
    }
    lines
}

/// What a case must answer: the route's success, or an error status and code.
fn expected(route: &Route, header: Header, variant: Variant) -> Option<(u16, &'static str)> {
    let has_body = route.body_opt.is_some();
    match (header, variant) {
        (Header::Authorization, _) if !route.authenticated => None,
        (Header::Authorization, Variant::Missing | Variant::Empty) => Some((401, "missing_token")),
        (Header::Authorization, Variant::NotAscii) => Some((401, "invalid_authorization_header")),
        (Header::Authorization, Variant::Repeated) => Some((401, "repeated_authorization_header")),
        (Header::ContentType, Variant::Missing) => None,
        (Header::ContentType, _) if has_body => Some((415, "unsupported_media_type")),
        (Header::ContentType, _) => None,
        // Without a length the body is not read: the route gets an empty one.
        (Header::ContentLength, Variant::Missing) if has_body => Some((400, "malformed_request")),
        (Header::ContentLength, Variant::Missing | Variant::Repeated) => None,
        // The HTTP server refuses these before any route; the answer still has the body.
        (Header::ContentLength, Variant::Empty | Variant::NotAscii) => {
            Some((400, "malformed_http"))
        }
        (Header::RequestId, _) => None,
    }
}

/// Creates `tenant_id` through the admin API.
async fn create_tenant(app: &TestApp, tenant_id: Uuid) {
    let response = app
        .post_json(
            "/admin/tenants",
            &json!({ "tenant_id": tenant_id, "name": "Công ty thử nghiệm" }),
        )
        .await;
    assert_eq!(response.status(), 201);
}

/// Every route × every header × every variant: the right status, a bilingual error body, a
/// request id on every answer, and every scan and batch accepted was written.
#[tokio::test]
async fn every_header_variant_on_every_route_is_answered_rightly() {
    let app = spawn_app().await;
    let (tenant, paused) = (Uuid::new_v4(), Uuid::new_v4());
    create_tenant(&app, tenant).await;
    create_tenant(&app, paused).await;
    let routes = every_route(tenant, paused);
    let mut cases = 0;
    let mut scan_ids = Vec::new();
    let mut batch_records = 0;
    for route in &routes {
        for header in HEADERS {
            for variant in VARIANTS {
                let case = format!(
                    "{} {} with {header:?} {variant:?}",
                    route.method, route.path
                );
                let lines = header_lines(route, header, variant);
                let body = route.body_opt.as_deref().unwrap_or("").as_bytes();
                let response = raw_request(&app, route.method, &route.path, &lines, body).await;
                let expectation = expected(route, header, variant);
                match expectation {
                    Some((status, code)) => assert_bilingual_error(&case, &response, status, code),
                    None => {
                        assert_eq!(
                            response.status,
                            route.success,
                            "{case}: {:?}",
                            String::from_utf8_lossy(&response.body)
                        );
                        if response.status == 202 {
                            scan_ids.push(response.json()["scan_id"].as_str().unwrap().to_string());
                        }
                        if response.status == 201 && route.path.starts_with("/batch") {
                            assert_eq!(response.json()["records_created"], 2, "{case}");
                            batch_records += 2;
                        }
                        if route.success >= 400 {
                            let code = response.json()["code"].as_str().unwrap().to_string();
                            assert_bilingual_error(&case, &response, route.success, &code);
                        }
                    }
                }
                // Every answer a route gave names its request (the HTTP server's own
                // refusals come before there is one).
                if expectation.map(|(_, code)| code) != Some("malformed_http") {
                    let request_id = response
                        .header("x-request-id")
                        .unwrap_or_else(|| panic!("{case}: no x-request-id"));
                    assert!(
                        !request_id.is_empty() && request_id.iter().all(u8::is_ascii_graphic),
                        "{case}: {request_id:?}"
                    );
                }
                cases += 1;
            }
        }
    }
    assert_eq!(cases, routes.len() * HEADERS.len() * VARIANTS.len());
    assert!(cases >= 300, "{cases} cases");
    for scan_id in &scan_ids {
        let scan = app
            .wait_for_scan(tenant, scan_id, Duration::from_secs(60))
            .await;
        assert_eq!(scan["status"], "completed", "{scan}");
    }
    assert_eq!(
        app.activities_of(tenant).await,
        2 * scan_ids.len() as i64 + batch_records
    );
    assert!(!scan_ids.is_empty() && batch_records > 0);
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

/// Every path × every method: a route's own method gets its answer, any other a bilingual 405
/// (a HEAD answer has no body).
#[tokio::test]
async fn every_method_on_every_path_is_answered_rightly() {
    let app = spawn_app().await;
    let (tenant, paused) = (Uuid::new_v4(), Uuid::new_v4());
    create_tenant(&app, tenant).await;
    create_tenant(&app, paused).await;
    let routes = every_route(tenant, paused);
    let bare = |path: &str| path.split('?').next().unwrap().to_string();
    let mut paths: Vec<String> = routes.iter().map(|route| bare(&route.path)).collect();
    paths.dedup();
    let mut cases = 0;
    for path in &paths {
        for method in METHODS {
            let route_opt = routes
                .iter()
                .find(|route| bare(&route.path) == *path && route.method == method);
            let full_path = route_opt.map_or(path.as_str(), |route| route.path.as_str());
            let case = format!("{method} {full_path}");
            let body = route_opt
                .and_then(|route| route.body_opt.clone())
                .unwrap_or_default();
            let mut lines =
                vec![format!("authorization: Bearer {BOOTSTRAP_ADMIN_TOKEN}").into_bytes()];
            if !body.is_empty() {
                lines.push(b"content-type: application/json".to_vec());
                lines.push(format!("content-length: {}", body.len()).into_bytes());
            }
            let response = raw_request(&app, method, full_path, &lines, body.as_bytes()).await;
            match route_opt {
                Some(route) => assert_eq!(response.status, route.success, "{case}"),
                None if method == "HEAD" => {
                    assert_eq!(response.status, 405, "{case}");
                    assert!(response.body.is_empty(), "{case}");
                }
                None => assert_bilingual_error(&case, &response, 405, "method_not_allowed"),
            }
            cases += 1;
        }
    }
    assert_eq!(cases, paths.len() * METHODS.len());
    app.stop().await;
}

/// Where hostile text goes in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Field(&'static str),
    /// The first item of an array field.
    Item(&'static str),
    /// An extra field's name.
    FieldName,
}

const TARGETS: [Target; 8] = [
    Target::Field("activity_name"),
    Target::Field("pdpl_category"),
    Target::Item("data_fields"),
    Target::Field("purpose"),
    Target::Field("legal_basis"),
    Target::Field("retention_period"),
    Target::Item("data_recipients"),
    Target::FieldName,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Nul,
    LoneSurrogate,
    OneMebibyte,
    BidiAndZeroWidth,
}

const PAYLOADS: [Payload; 4] = [
    Payload::Nul,
    Payload::LoneSurrogate,
    Payload::OneMebibyte,
    Payload::BidiAndZeroWidth,
];

impl Payload {
    /// The payload as a JSON string literal.
    fn json_literal(self) -> String {
        match self {
            Payload::Nul => r#""a\u0000b""#.to_string(),
            Payload::LoneSurrogate => r#""a\ud800b""#.to_string(),
            Payload::OneMebibyte => format!("\"{}\"", "x".repeat(1 << 20)),
            Payload::BidiAndZeroWidth => {
                serde_json::to_string("\u{202e}Hồ sơ\u{200b}lương\u{200f}\u{2066}").unwrap()
            }
        }
    }

    /// Whether a record holding it at `target` is valid.
    fn is_valid_at(self, target: Target) -> bool {
        self == Payload::BidiAndZeroWidth
            && !matches!(target, Target::Field("pdpl_category") | Target::FieldName)
    }
}

/// The JSON text of a record with `payload` at `target`.
fn hostile_record(target: Target, payload: Payload) -> String {
    const MARK: &str = "\"@@hostile@@\"";
    let mut record = activity(1);
    let object = record.as_object_mut().unwrap();
    match target {
        Target::Field(name) => {
            object.insert(name.into(), json!("@@hostile@@"));
        }
        Target::Item(name) => {
            object.insert(name.into(), json!(["@@hostile@@", "mục hợp lệ"]));
        }
        Target::FieldName => {
            object.insert("@@hostile@@".into(), json!(1));
        }
    }
    record.to_string().replace(MARK, &payload.json_literal())
}

/// The error a hostile record is reported with names its field (an array item by position;
/// an unknown field by its name, made safe); a record the parser refused names none.
fn assert_record_error(case: &str, error: &Value, target: Target, payload: Payload) {
    assert_eq!(error["index"], 1, "{case}: {error}");
    let field = error["field"].as_str().unwrap();
    for key in ["field", "error", "error_vi"] {
        assert_displayable(case, error[key].as_str().unwrap());
    }
    assert!(!error["error"].as_str().unwrap().is_empty(), "{case}");
    assert!(!error["error_vi"].as_str().unwrap().is_empty(), "{case}");
    let expected_field = match (target, payload) {
        (_, Payload::LoneSurrogate) => String::new(),
        (Target::Field(name), _) => name.to_string(),
        (Target::Item(name), _) => format!("{name}[0]"),
        (Target::FieldName, Payload::Nul) => "a\\u0000b".to_string(),
        (Target::FieldName, Payload::OneMebibyte) => format!("{}…", "x".repeat(64)),
        (Target::FieldName, Payload::BidiAndZeroWidth) => {
            "\\u202eHồ sơ\\u200blương\\u200f\\u2066".to_string()
        }
    };
    assert_eq!(field, expected_field, "{case}: {error}");
}

/// Every string field and field name × every hostile text, in a scan and in a batch, between
/// two valid records: the hostile record is reported (or, when valid, written), and its
/// neighbours are written.
#[tokio::test]
async fn hostile_text_in_every_field_never_fails_its_neighbours() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let neighbour = |index: usize| activity(index).to_string();
    let mut scans = Vec::new();
    let mut cases = 0;
    for target in TARGETS {
        for payload in PAYLOADS {
            let records = format!(
                "[{},{},{}]",
                neighbour(0),
                hostile_record(target, payload),
                neighbour(2)
            );
            let valid = payload.is_valid_at(target);
            let written = if valid { 3 } else { 2 };

            let case = format!("scan: {payload:?} at {target:?}");
            let body = format!(r#"{{"tenant_id":"{tenant}","activities":{records}}}"#);
            let response = app
                .post_raw("/data-scans", "application/json", body.into_bytes())
                .await;
            assert_eq!(response.status(), 202, "{case}");
            let answer: Value = response.json().await.unwrap();
            let errors = answer["errors"].as_array().cloned().unwrap_or_default();
            if valid {
                assert!(errors.is_empty(), "{case}: {answer}");
            } else {
                assert_eq!(errors.len(), 1, "{case}: {answer}");
                assert_record_error(&case, &errors[0], target, payload);
            }
            scans.push((
                case,
                answer["scan_id"].as_str().unwrap().to_string(),
                written,
                valid,
                target,
                payload,
            ));

            let case = format!("batch: {payload:?} at {target:?}");
            let body = format!(r#"{{"activities":{records}}}"#);
            let response = app
                .post_raw(
                    &format!("/batch/processing-activities?tenant_id={tenant}"),
                    "application/json",
                    body.into_bytes(),
                )
                .await;
            assert_eq!(response.status(), 201, "{case}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["records_created"], written, "{case}: {answer}");
            let errors = answer["errors"].as_array().cloned().unwrap_or_default();
            if valid {
                assert!(errors.is_empty(), "{case}: {answer}");
            } else {
                assert_eq!(errors.len(), 1, "{case}: {answer}");
                assert_record_error(&case, &errors[0], target, payload);
            }
            cases += 2;
        }
    }
    assert_eq!(cases, TARGETS.len() * PAYLOADS.len() * 2);
    let mut expected_total = 0;
    for (case, scan_id, written, valid, target, payload) in &scans {
        let scan = app
            .wait_for_scan(tenant, scan_id, Duration::from_secs(60))
            .await;
        let status = if *valid {
            "completed"
        } else {
            "completed_with_errors"
        };
        assert_eq!(scan["status"], status, "{case}: {scan}");
        assert_eq!(scan["records_processed"], *written, "{case}: {scan}");
        // The stored error list (jsonb) holds the same safe text.
        if !*valid {
            assert_record_error(case, &scan["errors"][0], *target, *payload);
        }
        let stored = app
            .count(
                "SELECT count(*) FROM processing_activities WHERE scan_id = $1::text::uuid",
                &[scan_id],
            )
            .await;
        assert_eq!(stored, *written as i64, "{case}");
        expected_total += *written as i64;
    }
    // Batches wrote as many again.
    assert_eq!(app.activities_of(tenant).await, 2 * expected_total);
    // Valid hostile text is stored exactly as sent.
    let verbatim = app
        .count(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1 AND activity_name = $2",
            &[&tenant, &"\u{202e}Hồ sơ\u{200b}lương\u{200f}\u{2066}"],
        )
        .await;
    assert_eq!(verbatim, 2);
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}

/// Regression (issue 1): an unknown field named with U+0000 made the scan's error list
/// unstorable, and the whole scan was answered 503 `database_unavailable`, every time; the
/// batch route echoed the raw U+0000.
#[tokio::test]
async fn a_field_name_holding_nul_is_reported_and_its_neighbours_written() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let records = format!(
        r#"[{},{}]"#,
        activity(0),
        activity(1)
            .to_string()
            .replacen('{', r#"{"a\u0000b":1,"#, 1)
    );
    let body = format!(r#"{{"tenant_id":"{tenant}","activities":{records}}}"#);
    let response = app
        .post_raw("/data-scans", "application/json", body.into_bytes())
        .await;
    let scan_id = accepted_scan_id(response).await;
    let scan = app
        .wait_for_scan(tenant, &scan_id, Duration::from_secs(60))
        .await;
    assert_eq!(scan["records_processed"], 1, "{scan}");
    assert_eq!(scan["errors"][0]["field"], "a\\u0000b", "{scan}");

    let body = format!(r#"{{"activities":{records}}}"#);
    let response = app
        .post_raw(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            "application/json",
            body.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["records_created"], 1);
    assert_eq!(answer["errors"][0]["field"], "a\\u0000b", "{answer}");
    let echoed = answer["errors"][0]["error"].as_str().unwrap();
    assert!(!echoed.contains('\0'), "{answer}");
    assert_eq!(app.activities_of(tenant).await, 2);
    app.stop().await;
}

/// Regression (issue 2): a non-ASCII `Authorization` on a path with two routes was answered
/// 405 by the other route; a non-ASCII content type likewise.
#[tokio::test]
async fn a_non_ascii_header_gets_its_own_status_on_a_path_with_two_routes() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let not_ascii = b"authorization: Bearer t\xc3\xb6k\xc3\xa9n".to_vec();
    for (method, path) in [
        ("GET", "/admin/tenants".to_string()),
        ("GET", format!("/data-scans?tenant_id={tenant}")),
        ("POST", "/data-scans".to_string()),
    ] {
        let response =
            raw_request(&app, method, &path, std::slice::from_ref(&not_ascii), b"").await;
        assert_bilingual_error(&path, &response, 401, "invalid_authorization_header");
    }
    let body = json!({ "tenant_id": tenant, "activities": [activity(0)] }).to_string();
    let lines = [
        format!("authorization: Bearer {BOOTSTRAP_ADMIN_TOKEN}").into_bytes(),
        b"content-type: application/json; charset=\xc3\xbctf-8".to_vec(),
        format!("content-length: {}", body.len()).into_bytes(),
    ];
    let response = raw_request(&app, "POST", "/data-scans", &lines, body.as_bytes()).await;
    assert_bilingual_error("content type", &response, 415, "unsupported_media_type");
    app.stop().await;
}

/// Regression (issue 3): too many headers (431) and an over-long URI (414) were answered with
/// an empty body.
#[tokio::test]
async fn refusals_before_routing_carry_the_bilingual_body() {
    let app = spawn_app().await;
    let long_uri = format!("/health?{}", "a".repeat(70_000));
    let response = raw_request(&app, "GET", &long_uri, &[], b"").await;
    assert_bilingual_error("long URI", &response, 414, "uri_too_long");

    let many: Vec<Vec<u8>> = (0..120)
        .map(|index| format!("x-extra-{index}: 1").into_bytes())
        .collect();
    let response = raw_request(&app, "GET", "/health", &many, b"").await;
    assert_bilingual_error("many headers", &response, 431, "headers_too_large");

    // (One huge header is not a reliable 431: hyper refuses a head only while it is still
    // incomplete when its buffer reaches the limit, and one large read can complete it.)

    let nul_in_header = vec![b"x-bad: a\x00b".to_vec()];
    let response = raw_request(&app, "GET", "/health", &nul_in_header, b"").await;
    assert_bilingual_error("NUL in a header", &response, 400, "malformed_http");

    // The engine serves on, on other connections.
    assert_eq!(app.get("/health").await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ingest_http_protocol_errors_total{status=\"431\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// The admin headers of a JSON request with `body`.
fn admin_json_headers(body: &str) -> Vec<Vec<u8>> {
    vec![
        format!("authorization: Bearer {BOOTSTRAP_ADMIN_TOKEN}").into_bytes(),
        b"content-type: application/json".to_vec(),
        format!("content-length: {}", body.len()).into_bytes(),
    ]
}

/// Found by schemathesis: serde reads a struct from a JSON array by position, so
/// `PUT /admin/tenants/{id}/limits` with `[5, 10, 100]` set three limits without naming one.
/// Every admin body must be an object; the limits stay as they were.
#[tokio::test]
async fn an_admin_body_that_is_an_array_is_refused_not_read_by_position() {
    let app = spawn_app().await;
    let tenant_id = Uuid::now_v7();
    create_tenant(&app, tenant_id).await;
    let before: Value = app
        .get(&format!("/admin/tenants/{tenant_id}"))
        .await
        .json()
        .await
        .unwrap();
    let limits_path = format!("/admin/tenants/{tenant_id}/limits");
    for (method, path, body) in [
        ("PUT", limits_path.as_str(), "[5, 10, 100]"),
        ("PUT", limits_path.as_str(), " \n[5, null, null]"),
        (
            "POST",
            "/admin/tenants",
            r#"[null, "Công ty", null, 5, 5, 5]"#,
        ),
        ("POST", "/admin/keys", r#"["service", null, "khóa"]"#),
        ("POST", "/admin/keys", "\"service\""),
    ] {
        let case = format!("{method} {path} {body}");
        let response = raw_request(
            &app,
            method,
            path,
            &admin_json_headers(body),
            body.as_bytes(),
        )
        .await;
        assert_bilingual_error(&case, &response, 400, "malformed_request");
    }
    let after: Value = app
        .get(&format!("/admin/tenants/{tenant_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["limits"], before["limits"],
        "the limits did not change"
    );
    let tenants: Value = app.get("/admin/tenants").await.json().await.unwrap();
    assert_eq!(tenants["count"], 1, "no tenant was created: {tenants}");
    app.stop().await;
}

/// Found by schemathesis: the document says `integer`, which JSON Schema (and many clients)
/// also write as `6838.0`; the engine refused it as malformed. A whole number with a zero
/// fraction is now read as that integer; a real fraction is still refused.
#[tokio::test]
async fn a_limit_written_as_a_whole_number_with_a_zero_fraction_is_that_integer() {
    let app = spawn_app().await;
    let tenant_id = Uuid::now_v7();
    let body = format!(
        r#"{{"tenant_id": "{tenant_id}", "name": "Công ty Huế", "records_per_second": 6838.0, "burst": 9.0e3, "max_backlog_records": 100000}}"#
    );
    let response = raw_request(
        &app,
        "POST",
        "/admin/tenants",
        &admin_json_headers(&body),
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        response.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let tenant = response.json();
    assert_eq!(tenant["limits"]["records_per_second"], 6838, "{tenant}");
    assert_eq!(tenant["limits"]["burst"], 9000, "{tenant}");

    let path = format!("/admin/tenants/{tenant_id}/limits");
    let body = r#"{"burst": 1500.0}"#;
    let response = raw_request(
        &app,
        "PUT",
        &path,
        &admin_json_headers(body),
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["limits"]["burst"], 1500);

    for body in [
        r#"{"burst": 1500.5}"#,
        r#"{"burst": 1e300}"#,
        r#"{"burst": "1500"}"#,
    ] {
        let response = raw_request(
            &app,
            "PUT",
            &path,
            &admin_json_headers(body),
            body.as_bytes(),
        )
        .await;
        assert_bilingual_error(body, &response, 400, "malformed_request");
    }
    let tenant: Value = app
        .get(&format!("/admin/tenants/{tenant_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tenant["limits"]["burst"], 1500, "{tenant}");
    app.stop().await;
}
