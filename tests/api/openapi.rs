//! The served OpenAPI document: it lists exactly the routes the router answers, and a
//! property-based fuzzer (schemathesis) driven by it against the real engine finds no server
//! error and no answer that contradicts it.

use std::collections::BTreeSet;

use ingest_engine::http::ROUTES;
use serde_json::Value;

use crate::helpers::spawn_app;

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
