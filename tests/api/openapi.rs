//! The served OpenAPI document: it lists exactly the routes the router answers, and a
//! property-based fuzzer (schemathesis) driven by it against the real engine finds no server
//! error and no answer that contradicts it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ingest_engine::http::ROUTES;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{activities, assert_error, repository_path, spawn_app};

/// The document's operations as `(METHOD, path template)`.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete path for a template: each `{parameter}` becomes `value`.
fn concrete(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_and_the_router_have_the_same_routes() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the document needs no token");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the document is JSON"
    );
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );

    // The table the router is built from (the engine refuses to start if they differ) against
    // the document, both ways.
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|route| {
            (
                route.method.as_str().to_string(),
                route.template.to_string(),
            )
        })
        .collect();
    let documented = documented_operations(&document);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from the document: {undocumented:?}; documented operations the router \
         lacks: {unrouted:?}"
    );

    // And the running router answers every documented operation itself, not with its
    // unknown-route 404 or wrong-method 405: public routes with 200, the others with 401.
    for (method, template) in &documented {
        let path = concrete(template, "00000000-0000-0000-0000-000000000001");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let operation = &document["paths"][template][method.as_str().to_ascii_lowercase()];
        let expected = if operation.get("security").is_some() {
            401
        } else {
            200
        };
        assert_eq!(
            response.status().as_u16(),
            expected,
            "{method} {path} without a token"
        );
    }

    // A user reads every operation's summary and description in both languages, and every
    // error answer has the bilingual error body.
    for (method, template) in &documented {
        let operation = &document["paths"][template][method.to_ascii_lowercase()];
        for text in ["summary", "description"] {
            let text = operation[text].as_str().unwrap_or("");
            assert!(
                text.contains(" / ") || text.contains(" — "),
                "{method} {template}: {text:?} is not in English and Vietnamese"
            );
        }
        let responses = operation["responses"].as_object().unwrap();
        for (status, response) in responses {
            let is_error = status.starts_with('4') || status.starts_with('5');
            if is_error && template != "/health/database" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {template} {status}"
                );
            }
        }
    }
    app.stop().await;
}

/// Runs `tests/schemathesis/run.sh` (schemathesis and openapi-spec-validator from PyPI, in a
/// virtual environment it creates under `target/` and reuses) against a real engine with an
/// admin token and a tenant key, then checks the engine is still healthy.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_contradiction() {
    let app = spawn_app().await;
    let tenant_id = Uuid::now_v7();
    let created = app
        .post_json(
            "/admin/tenants",
            &json!({ "tenant_id": tenant_id, "name": "Công ty Kiểm thử Đà Nẵng", "region": "central" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let minted = app
        .post_json(
            "/admin/keys",
            &json!({ "scope": "tenant", "tenant_id": tenant_id, "name": "schemathesis" }),
        )
        .await;
    assert_eq!(minted.status(), 201);
    let minted: Value = minted.json().await.unwrap();
    let tenant_token = minted["token"].as_str().unwrap().to_string();
    // Some activities, so the reads have pages and summaries to answer.
    let stored = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant_id}"),
            &json!({ "activities": activities(30) }),
        )
        .await;
    assert_eq!(stored.status(), 201);

    let script = repository_path("tests/schemathesis/run.sh");
    let started = Instant::now();
    let run = tokio::process::Command::new("bash")
        .arg(&script)
        .env("ENGINE_URL", &app.address)
        .env("ADMIN_TOKEN", &app.token)
        .env("TENANT_TOKEN", &tenant_token)
        .env("TENANT_ID", tenant_id.to_string())
        .env(
            "SCHEMATHESIS_VENV",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv"),
        )
        .env(
            "SCHEMATHESIS_REPORT_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-report"),
        )
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the schemathesis run ends within 15 minutes")
        .expect("bash runs the schemathesis script");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "{printed}\nschemathesis run took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures ({}):\n{printed}",
        output.status
    );

    for path in ["/health", "/health/database"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path} after the fuzzing");
    }
    app.stop().await;
}

/// Found by schemathesis: answers that contradicted the document. Each pair here is what the
/// engine does and what the document now says about it.
#[tokio::test]
async fn the_document_says_what_the_engine_accepts_and_refuses() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schema = |name: &str| document["components"]["schemas"][name].clone();

    // A record's optional field may be null (read as absent): the record is valid.
    let tenant_id = Uuid::now_v7();
    let mut record = activities(1).remove(0);
    for field in [
        "purpose",
        "legal_basis",
        "retention_period",
        "data_recipients",
    ] {
        record[field] = Value::Null;
    }
    let accepted = app
        .post_json(
            "/data-scans",
            &json!({ "tenant_id": tenant_id, "activities": [record] }),
        )
        .await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["records_invalid"], 0, "{accepted}");
    let activity = schema("Activity");
    for field in [
        "purpose",
        "legal_basis",
        "retention_period",
        "data_recipients",
    ] {
        let types = &activity["properties"][field]["type"];
        assert!(
            types
                .as_array()
                .is_some_and(|types| types.contains(&json!("null"))),
            "{field}: {types}"
        );
    }
    // A text holding U+0000 makes a record invalid: the document's text fields exclude it.
    for field in ["activity_name", "purpose"] {
        assert_eq!(
            activity["properties"][field]["pattern"], "^[^\\u0000]*$",
            "{field}"
        );
    }

    // Only a tenant key takes a tenant_id.
    let refused = app
        .post_json(
            "/admin/keys",
            &json!({ "scope": "service", "tenant_id": tenant_id }),
        )
        .await;
    assert_error(refused, 400, "invalid_scope").await;
    let new_key = schema("NewKey");
    let variants = new_key["oneOf"]
        .as_array()
        .expect("NewKey is one of two shapes");
    assert_eq!(variants.len(), 2, "{new_key}");
    assert_eq!(variants[0]["properties"]["tenant_id"]["type"], "null");
    assert_eq!(variants[1]["required"], json!(["scope", "tenant_id"]));

    // A limits change needs one limit that is not null.
    let tenant_path = format!("/admin/tenants/{tenant_id}/limits");
    let refused = app
        .request(reqwest::Method::PUT, &tenant_path)
        .json(&json!({ "burst": null }))
        .send()
        .await
        .unwrap();
    assert_error(refused, 400, "invalid_field").await;
    let limits = schema("LimitsChange");
    let one_given = limits["allOf"][1]["anyOf"]
        .as_array()
        .expect("one of the limits");
    assert_eq!(one_given.len(), 3, "{limits}");
    for alternative in one_given {
        assert_eq!(alternative["required"].as_array().map(Vec::len), Some(1));
    }

    // A tenant name of nothing but Unicode white space (U+0085 among it) is refused, and the
    // document's pattern spells out that class rather than a dialect's `\s`.
    for name in ["\u{85}", " \u{3000}\t"] {
        let refused = app
            .post_json("/admin/tenants", &json!({ "name": name }))
            .await;
        assert_error(refused, 400, "invalid_field").await;
    }
    let name_pattern = schema("NewTenant")["properties"]["name"]["pattern"].clone();
    assert!(
        name_pattern
            .as_str()
            .is_some_and(|pattern| pattern.contains("\\u0085") && !pattern.contains("\\s")),
        "{name_pattern}"
    );

    // An empty tenant_id lists every tenant's dead letters.
    let listed = app.get("/admin/dead-letters?tenant_id=").await;
    assert_eq!(listed.status(), 200);
    let filter = schema("TenantFilter");
    assert!(
        filter["anyOf"].as_array().is_some_and(
            |alternatives| alternatives.contains(&json!({ "type": "string", "maxLength": 0 }))
        ),
        "{filter}"
    );
    app.stop().await;
}
