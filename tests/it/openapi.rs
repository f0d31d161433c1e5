//! `GET /openapi.json` (contract §6, "Described"): the document's
//! structure (every `$ref` resolves, every operation has a 2xx answer,
//! every path parameter is declared, every management route is there and
//! nothing else), and a scenario on both backends that calls every
//! management route and the model routes and checks each JSON answer
//! against the schema the document gives for its (method, path, status).
//!
//! The JSON Schema validator is the test's own (no new crates): `type`
//! (with type lists for nullable fields), `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `$ref`, `allOf`,
//! `anyOf`, `oneOf`, the length and range bounds, and the formats the
//! document uses (`date-time`, `decimal`, `email`). Every schema keyword in
//! the document must be one it knows, so no part of a schema is skipped
//! without notice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::client::{self, Reply};
use crate::helpers::fixture;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, ADMIN};
use crate::helpers::upstream::{MockUpstream, Reply as Upstream, Seen};

/// Every route of `tollgate::admin::route` (and the two token GETs served
/// before it), as the document names them.
const MANAGEMENT_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/users"),
    ("GET", "/api/email/outbox"),
    ("POST", "/api/users/{user_id}/keys"),
    ("POST", "/api/users/{user_id}/credits"),
    ("GET", "/api/me"),
    ("GET", "/api/me/usage"),
    ("GET", "/api/me/limits"),
    ("GET", "/api/models"),
    ("GET", "/api/me/keys"),
    ("POST", "/api/me/keys"),
    ("PATCH", "/api/me/keys/{key_id}"),
    ("DELETE", "/api/me/keys/{key_id}"),
    ("POST", "/api/teams"),
    ("GET", "/api/teams"),
    ("GET", "/api/teams/{team_id}"),
    ("PATCH", "/api/teams/{team_id}"),
    ("DELETE", "/api/teams/{team_id}"),
    ("POST", "/api/teams/{team_id}/transfer"),
    ("GET", "/api/teams/{team_id}/members"),
    ("PATCH", "/api/teams/{team_id}/members/{user_id}"),
    ("DELETE", "/api/teams/{team_id}/members/{user_id}"),
    ("POST", "/api/teams/{team_id}/invitations"),
    ("GET", "/api/teams/{team_id}/invitations"),
    ("DELETE", "/api/teams/{team_id}/invitations/{invitation_id}"),
    ("PUT", "/api/teams/{team_id}/invite-link"),
    ("GET", "/api/teams/{team_id}/join-requests"),
    (
        "POST",
        "/api/teams/{team_id}/join-requests/{request_id}/approve",
    ),
    (
        "POST",
        "/api/teams/{team_id}/join-requests/{request_id}/deny",
    ),
    ("POST", "/api/teams/{team_id}/webhooks"),
    ("GET", "/api/teams/{team_id}/webhooks"),
    ("DELETE", "/api/teams/{team_id}/webhooks/{webhook_id}"),
    (
        "GET",
        "/api/teams/{team_id}/webhooks/{webhook_id}/deliveries",
    ),
    ("GET", "/api/teams/{team_id}/report-schedule"),
    ("PUT", "/api/teams/{team_id}/report-schedule"),
    ("DELETE", "/api/teams/{team_id}/report-schedule"),
    ("POST", "/api/teams/{team_id}/report-schedule/send"),
    ("GET", "/api/teams/{team_id}/usage"),
    ("GET", "/api/teams/{team_id}/audit"),
    ("POST", "/api/invitations/{token}/accept"),
    ("POST", "/api/join/{token}"),
    ("GET", "/api/invitations/{token}"),
    ("GET", "/api/join/{token}"),
];

/// Routes outside `/api` the document must describe.
const OTHER_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

// ---------------------------------------------------------------------------
// The validator.

/// Keywords the validator checks.
const CHECKED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "additionalProperties",
    "allOf",
    "anyOf",
    "oneOf",
];
/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &["description", "examples", "title", "default"];
const FORMATS: &[&str] = &["date-time", "decimal", "email"];

/// JSON Schema 2020-12, as much of it as the document uses, against one
/// document (`$ref`s are `#/…` pointers into it).
struct Validator<'a> {
    doc: &'a Value,
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(number: &serde_json::Number) -> bool {
    let text = number.to_string();
    !text.contains(['.', 'e', 'E'])
}

fn has_type(value: &Value, name: &str) -> bool {
    match (name, value) {
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => type_of(value) == name,
    }
}

/// A decimal string as the gateway writes money: `-?digits.digits` with
/// 1 to 9 decimals.
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    match unsigned.split_once('.') {
        Some((whole, fraction)) => {
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && (1..=9).contains(&fraction.len())
                && fraction.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn format_problem(format: &str, text: &str) -> Option<String> {
    let ok = match format {
        "date-time" => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok()
                && text.ends_with('Z')
        }
        "decimal" => is_decimal(text),
        "email" => text.contains('@'),
        other => return Some(format!("unknown format {other:?}")),
    };
    (!ok).then(|| format!("{text:?} is not a {format} string"))
}

fn child(at: &str, name: &str) -> String {
    format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// Resolves a `#/…` JSON pointer inside `doc`.
fn resolve<'v>(doc: &'v Value, reference: &str) -> Option<&'v Value> {
    doc.pointer(reference.strip_prefix('#')?)
        .filter(|_| reference.starts_with("#/"))
}

impl Validator<'_> {
    /// Problems of `value` against `schema`, each as "pointer: reason".
    fn check(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        self.walk(schema, value, "", &mut problems);
        problems
    }

    fn walk(&self, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
        let shown = if at.is_empty() { "/" } else { at };
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(format!("{shown}: no value is allowed here"));
                return;
            }
            Value::Object(map) => map,
            other => {
                out.push(format!("{shown}: the schema {other} is not an object"));
                return;
            }
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match resolve(self.doc, reference) {
                Some(target) => self.walk(target, value, at, out),
                None => out.push(format!("{shown}: $ref {reference} does not resolve")),
            }
        }
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(name) => vec![name.as_str()],
                Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.iter().any(|name| has_type(value, name)) {
                out.push(format!(
                    "{shown}: expected {} but found {} ({})",
                    names.join(" or "),
                    type_of(value),
                    abbreviated(value)
                ));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                out.push(format!(
                    "{shown}: {} is not one of {}",
                    abbreviated(value),
                    Value::Array(options.clone())
                ));
            }
        }
        if let Some(constant) = schema.get("const") {
            if constant != value {
                out.push(format!(
                    "{shown}: {} is not the constant {constant}",
                    abbreviated(value)
                ));
            }
        }
        if let (Some(format), Some(text)) =
            (schema.get("format").and_then(Value::as_str), value.as_str())
        {
            if let Some(problem) = format_problem(format, text) {
                out.push(format!("{shown}: {problem}"));
            }
        }
        let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
        if let Some(number) = value.as_f64() {
            if bound("minimum").is_some_and(|min| number < min) {
                out.push(format!("{shown}: {number} is below the minimum"));
            }
            if bound("maximum").is_some_and(|max| number > max) {
                out.push(format!("{shown}: {number} is above the maximum"));
            }
        }
        if let Some(text) = value.as_str() {
            let length = text.chars().count() as f64;
            if bound("minLength").is_some_and(|min| length < min) {
                out.push(format!("{shown}: {text:?} is shorter than minLength"));
            }
            if bound("maxLength").is_some_and(|max| length > max) {
                out.push(format!("{shown}: a string longer than maxLength"));
            }
        }
        if let Some(items) = value.as_array() {
            let length = items.len() as f64;
            if bound("minItems").is_some_and(|min| length < min) {
                out.push(format!("{shown}: fewer items than minItems"));
            }
            if bound("maxItems").is_some_and(|max| length > max) {
                out.push(format!("{shown}: more items than maxItems"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item_schema, item, &child(at, &i.to_string()), out);
                }
            }
        }
        if let Some(object) = value.as_object() {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        out.push(format!("{shown}: the required field {name:?} is missing"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, field) in object {
                match properties.and_then(|p| p.get(name)) {
                    Some(field_schema) => self.walk(field_schema, field, &child(at, name), out),
                    None => {
                        if let Some(extra) = schema.get("additionalProperties") {
                            self.walk(extra, field, &child(at, name), out);
                        }
                    }
                }
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for part in all {
                self.walk(part, value, at, out);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let reasons: Vec<Vec<String>> = any.iter().map(|s| self.sub(s, value, at)).collect();
            if !reasons.iter().any(Vec::is_empty) {
                out.push(format!(
                    "{shown}: matches none of anyOf: {}",
                    reasons
                        .iter()
                        .map(|r| r.join("; "))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let reasons: Vec<Vec<String>> = one.iter().map(|s| self.sub(s, value, at)).collect();
            let matching = reasons.iter().filter(|r| r.is_empty()).count();
            if matching != 1 {
                out.push(format!(
                    "{shown}: matches {matching} of oneOf (exactly one wanted): {}",
                    reasons
                        .iter()
                        .map(|r| r.join("; "))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
        }
    }

    fn sub(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        self.walk(schema, value, at, &mut problems);
        problems
    }
}

fn abbreviated(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

#[test]
fn the_validator_checks_what_it_says() {
    let doc = json!({"components": {"schemas": {
        "Money": {"type": "string", "format": "decimal"},
        "Thing": {
            "type": "object",
            "required": ["id", "when"],
            "properties": {
                "id": {"type": "string"},
                "when": {"type": ["string", "null"], "format": "date-time"},
                "cost": {"$ref": "#/components/schemas/Money"},
                "kind": {"enum": ["a", "b"]},
                "n": {"type": "integer", "minimum": 1},
                "list": {"type": "array", "items": {"type": "integer"}},
                "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            },
        },
    }}});
    let v = Validator { doc: &doc };
    let thing = json!({"$ref": "#/components/schemas/Thing"});
    let good = json!({"id": "x", "when": null, "cost": "0.0033475", "kind": "a", "n": 2, "list": [1], "either": 3, "more": true});
    assert_eq!(v.check(&thing, &good), Vec::<String>::new());
    let good = json!({"id": "x", "when": "2026-11-28T12:00:00Z"});
    assert_eq!(v.check(&thing, &good), Vec::<String>::new());
    let bad = json!({"when": "yesterday", "cost": 1.5, "kind": "c", "n": 0, "list": [1, "2"], "either": true});
    let problems = v.check(&thing, &bad);
    for expected in [
        "/: the required field \"id\" is missing",
        "/when: \"yesterday\" is not a date-time string",
        "/cost: expected string but found number",
        "/kind: \"c\" is not one of",
        "/n: 0 is below the minimum",
        "/list/1: expected integer but found string",
        "/either: matches 0 of oneOf",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }
    assert!(!v
        .check(&json!({"type": "string", "format": "decimal"}), &json!("5"))
        .is_empty());
    assert!(!v
        .check(&json!({"$ref": "#/components/schemas/Nope"}), &json!(1))
        .is_empty());
}

// ---------------------------------------------------------------------------
// Reading the document.

/// The operation of (method, template).
fn operation<'d>(doc: &'d Value, method: &str, template: &str) -> Option<&'d Value> {
    doc["paths"].get(template)?.get(method.to_ascii_lowercase())
}

/// A response object, following a `$ref` to `components.responses`.
fn deref<'d>(doc: &'d Value, value: &'d Value) -> &'d Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference).unwrap_or(&Value::Null),
        None => value,
    }
}

/// The response the document gives for a status: exact, `4XX`, or
/// `default`.
fn response_for<'d>(doc: &'d Value, op: &'d Value, status: u16) -> Option<&'d Value> {
    let responses = &op["responses"];
    let range = format!("{}XX", status / 100);
    responses
        .get(status.to_string())
        .or_else(|| responses.get(range))
        .or_else(|| responses.get("default"))
        .map(|r| deref(doc, r))
}

/// Every (METHOD, template) in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                all.insert((method.to_ascii_uppercase(), template.clone()));
            }
        }
    }
    all
}

/// A template with its parameter names blanked: `/api/teams/{}`.
fn shape(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The routes of `admin::route`'s match, read from its source: each arm
/// `(&Method::X, ["teams", id, "members"])` as (`X`, `/api/teams/{}/members`).
fn routes_in_admin_source() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/mod.rs");
    let source = std::fs::read_to_string(path).unwrap();
    let mut routes = BTreeSet::new();
    for arm in source.split("(&Method::").skip(1) {
        let (method, rest) = arm.split_once(',').unwrap();
        let Some(pattern) = rest
            .trim_start()
            .strip_prefix('[')
            .and_then(|p| p.split_once(']'))
            .map(|(p, _)| p)
        else {
            continue;
        };
        let segments: Vec<String> = pattern
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('"') {
                Some(literal) => literal.trim_end_matches('"').to_string(),
                None => "{}".to_string(),
            })
            .collect();
        routes.insert((method.to_string(), format!("/api/{}", segments.join("/"))));
    }
    routes
}

/// Every schema in the document, with where it is.
fn schemas_in(value: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let here = child(at, key);
                if key == "schema" {
                    out.push((here.clone(), inner.clone()));
                } else if at == "/components" && key == "schemas" {
                    for (name, schema) in inner.as_object().unwrap() {
                        out.push((child(&here, name), schema.clone()));
                    }
                    continue;
                }
                schemas_in(inner, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                schemas_in(item, &child(at, &i.to_string()), out);
            }
        }
        _ => {}
    }
}

/// Keywords of a schema (and of the schemas inside it) that the validator
/// does not know.
fn unknown_keywords(schema: &Value, at: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (key, inner) in map {
        if !CHECKED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            out.push(format!("{at}: keyword {key:?}"));
        }
        let here = child(at, key);
        match key.as_str() {
            "properties" => {
                for (name, field) in inner.as_object().into_iter().flatten() {
                    unknown_keywords(field, &child(&here, name), out);
                }
            }
            "items" | "additionalProperties" => unknown_keywords(inner, &here, out),
            "allOf" | "anyOf" | "oneOf" => {
                for (i, part) in inner.as_array().into_iter().flatten().enumerate() {
                    unknown_keywords(part, &child(&here, &i.to_string()), out);
                }
            }
            "format" if !FORMATS.contains(&inner.as_str().unwrap_or("")) => {
                out.push(format!("{at}: format {inner}"));
            }
            _ => {}
        }
    }
}

/// Every `$ref` string in the document.
fn refs_in(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    out.push((at.to_string(), inner.as_str().unwrap_or("").to_string()));
                }
                refs_in(inner, &child(at, key), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs_in(item, &child(at, &i.to_string()), out);
            }
        }
        _ => {}
    }
}

/// Every structural problem of the document.
fn structure_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if doc["openapi"] != "3.1.0" {
        problems.push(format!("openapi is {}, not 3.1.0", doc["openapi"]));
    }
    if doc["info"]["version"] != env!("CARGO_PKG_VERSION") {
        problems.push(format!("info.version is {}", doc["info"]["version"]));
    }
    if doc["info"]["title"].as_str().is_none() {
        problems.push("info.title is missing".into());
    }
    let mut refs = Vec::new();
    refs_in(doc, "", &mut refs);
    for (at, reference) in refs {
        if resolve(doc, &reference).is_none() {
            problems.push(format!("{at}: $ref {reference:?} does not resolve"));
        }
    }
    let mut schemas = Vec::new();
    schemas_in(doc, "", &mut schemas);
    for (at, schema) in &schemas {
        unknown_keywords(schema, at, &mut problems);
    }
    let mut ids = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let in_template: BTreeSet<&str> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let name = format!("{} {template}", method.to_ascii_uppercase());
            match op["operationId"].as_str() {
                Some(id) if !ids.insert(id.to_string()) => {
                    problems.push(format!("{name}: operationId {id} is used twice"))
                }
                None => problems.push(format!("{name}: no operationId")),
                _ => {}
            }
            let Some(responses) = op["responses"].as_object() else {
                problems.push(format!("{name}: no responses"));
                continue;
            };
            if !responses.keys().any(|s| s.starts_with('2')) {
                problems.push(format!("{name}: no 2xx response"));
            }
            for (status, response) in responses {
                let response = deref(doc, response);
                if response["description"].as_str().is_none() {
                    problems.push(format!("{name} → {status}: no description"));
                }
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    if content.get("schema").is_none() {
                        problems.push(format!("{name} → {status} {media}: no schema"));
                    }
                }
            }
            // Path parameters: declared on the path item or the operation,
            // required, and each one in the template.
            let declared: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| deref(doc, p))
                .filter(|p| p["in"] == "path")
                .collect();
            for wanted in &in_template {
                match declared.iter().find(|p| p["name"] == *wanted) {
                    Some(p) if p["required"] == true => {}
                    Some(_) => {
                        problems.push(format!("{name}: path parameter {wanted} not required"))
                    }
                    None => problems.push(format!("{name}: path parameter {wanted} not declared")),
                }
            }
            for p in declared {
                if !in_template.contains(p["name"].as_str().unwrap_or("")) {
                    problems.push(format!(
                        "{name}: parameter {} is not in the path",
                        p["name"]
                    ));
                }
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_whole_and_names_every_route() {
    let gw = TestGateway::start(Backend::Embedded, "http://127.0.0.1:9/v1").await;
    let reply = client::send("GET", &gw.url("/openapi.json"), "", None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc, tollgate::openapi::document());
    // HEAD: the same headers, no body.
    let head = client::send("HEAD", &gw.url("/openapi.json"), "", None, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert!(head.body.is_empty());
    // No credential needed, and a wrong one does not matter.
    let with_key = client::send("GET", &gw.url("/openapi.json"), "tg-wrong", None, &[]).await;
    assert_eq!(with_key.status, 200);

    let problems = structure_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");

    // The management routes, both ways.
    let listed: BTreeSet<(String, String)> = MANAGEMENT_ROUTES
        .iter()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        listed.len(),
        MANAGEMENT_ROUTES.len(),
        "a route listed twice"
    );
    let in_doc: BTreeSet<(String, String)> = documented(&doc)
        .into_iter()
        .filter(|(_, t)| t.starts_with("/api/"))
        .collect();
    let missing: Vec<_> = listed.difference(&in_doc).collect();
    let extra: Vec<_> = in_doc.difference(&listed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not in the document: {missing:#?}; not a management route: {extra:#?}"
    );
    // The list is the source's match, plus the two token GETs before it.
    let shapes: BTreeSet<(String, String)> = listed
        .iter()
        .filter(|(m, t)| {
            !(m == "GET" && (t == "/api/invitations/{token}" || t == "/api/join/{token}"))
        })
        .map(|(m, t)| (m.clone(), shape(t)))
        .collect();
    assert_eq!(
        shapes,
        routes_in_admin_source(),
        "MANAGEMENT_ROUTES and src/admin/mod.rs differ"
    );
    for (method, template) in OTHER_ROUTES {
        assert!(
            operation(&doc, method, template).is_some(),
            "{method} {template} is not in the document"
        );
    }
    gw.finish().await;
}

// ---------------------------------------------------------------------------
// The scenario.

/// One call of the scenario.
#[derive(Default)]
struct Call<'a> {
    method: &'a str,
    template: &'a str,
    args: &'a [&'a str],
    query: &'a str,
    key: &'a str,
    body: Option<Value>,
    headers: &'a [(&'a str, &'a str)],
}

/// Calls the gateway and checks each answer against the document.
struct Run<'g> {
    gw: &'g TestGateway,
    doc: Value,
    /// (METHOD, template, status) of every answer checked.
    checked: BTreeSet<(String, String, u16)>,
}

impl Run<'_> {
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        args: &[&str],
        key: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        self.send(
            Call {
                method,
                template,
                args,
                key,
                body,
                ..Call::default()
            },
            expect,
        )
        .await
    }

    /// Sends `call`, checks the status is `expect` and the body matches the
    /// document's schema for it; returns the body (JSON, or a string).
    async fn send(&mut self, call: Call<'_>, expect: u16) -> Value {
        let mut path = String::new();
        let mut args = call.args.iter();
        for (i, segment) in call.template.split('/').enumerate() {
            if i > 0 {
                path.push('/');
            }
            if segment.starts_with('{') {
                path.push_str(args.next().expect("an argument per path parameter"));
            } else {
                path.push_str(segment);
            }
        }
        assert!(
            args.next().is_none(),
            "too many arguments for {}",
            call.template
        );
        if !call.query.is_empty() {
            path = format!("{path}?{}", call.query);
        }
        let what = format!("{} {path}", call.method);
        let op = operation(&self.doc, call.method, call.template)
            .unwrap_or_else(|| panic!("{what}: {} is not in the document", call.template))
            .clone();
        let validator = Validator { doc: &self.doc };
        // A request the gateway should accept must match its documented body.
        if let (Some(body), true) = (&call.body, (200..300).contains(&expect)) {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(!schema.is_null(), "{what}: no request body in the document");
            let problems = validator.check(schema, body);
            assert!(
                problems.is_empty(),
                "{what}: the request body {body} does not match the document:\n{}",
                problems.join("\n")
            );
        }
        let reply: Reply = client::send(
            call.method,
            &self.gw.url(&path),
            call.key,
            call.body,
            call.headers,
        )
        .await;
        assert_eq!(reply.status, expect, "{what}: {}", reply.text());
        let response = response_for(&self.doc, &op, reply.status).unwrap_or_else(|| {
            panic!(
                "{what}: the document has no {} response for {} {}",
                reply.status, call.method, call.template
            )
        });
        let media = reply
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let Some(schema) = response["content"].get(&media).map(|c| &c["schema"]) else {
            panic!(
                "{what} → {}: the document has no {media:?} content (it has {})",
                reply.status, response["content"]
            );
        };
        self.checked.insert((
            call.method.to_string(),
            call.template.to_string(),
            reply.status,
        ));
        if media != "application/json" {
            return Value::String(reply.text());
        }
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "{what} → {}: not JSON ({e}): {}",
                reply.status,
                reply.text()
            )
        });
        let problems = validator.check(schema, &body);
        assert!(
            problems.is_empty(),
            "{what} → {} does not match the document ({} {} → {}):\n{}\n\nbody: {body:#}",
            reply.status,
            call.method,
            call.template,
            reply.status,
            problems.join("\n")
        );
        body
    }

    /// A user with a key (and credit): (id, key).
    async fn user(&mut self, email: &str, credit: &str) -> (String, String) {
        let user = self
            .call(
                "POST",
                "/api/users",
                &[],
                ADMIN,
                Some(json!({"email": email})),
                201,
            )
            .await;
        let id = user["id"].as_str().unwrap().to_string();
        let key = self
            .call(
                "POST",
                "/api/users/{user_id}/keys",
                &[&id],
                ADMIN,
                Some(json!({"name": "test"})),
                201,
            )
            .await["key"]
            .as_str()
            .unwrap()
            .to_string();
        if credit != "0" {
            self.call(
                "POST",
                "/api/users/{user_id}/credits",
                &[&id],
                ADMIN,
                Some(json!({"amount_usd": credit})),
                200,
            )
            .await;
        }
        (id, key)
    }

    /// A chat completion: `billing` is an `x-tollgate-billing` value or "".
    async fn chat(&mut self, key: &str, model: &str, billing: &str, expect: u16) -> Value {
        let team_header = [("x-tollgate-billing", billing)];
        self.send(
            Call {
                method: "POST",
                template: "/v1/chat/completions",
                key,
                body: Some(json!({
                    "model": model,
                    "max_tokens": 400,
                    "messages": [{"role": "user", "content": "total?"}],
                })),
                headers: if billing.is_empty() {
                    &[]
                } else {
                    &team_header
                },
                ..Call::default()
            },
            expect,
        )
        .await
    }
}

/// The mock provider: each route's recorded answer.
async fn provider() -> MockUpstream {
    MockUpstream::start(|seen: &Seen| {
        let stream = seen.body["stream"] == true;
        match seen.path.as_str() {
            "/v1/chat/completions" if stream => {
                Upstream::sse_split(&fixture("openai_chat_stream_usage.sse"), &[])
            }
            "/v1/responses" => {
                Upstream::sse_split(&fixture("openai_responses_stream_completed.sse"), &[])
            }
            "/v1/completions" => {
                Upstream::json(200, fixture("openai_completions_legacy_response.json"))
            }
            "/v1/embeddings" => Upstream::json(200, fixture("openai_embeddings_response.json")),
            "/v1/messages" => Upstream::json(200, fixture("anthropic_message_nonstream.json")),
            _ => Upstream::json(200, fixture("openai_chat_nonstream_cached_reasoning.json")),
        }
    })
    .await
}

both_backends!(every_answer_matches_the_document);
async fn every_answer_matches_the_document(backend: Backend) {
    let upstream = provider().await;
    let receiver = MockUpstream::start(|_| Upstream::json(200, "{}")).await;
    let hook_url = format!("http://{}/hooks/tollgate", receiver.addr);
    let gw = TestGateway::start_with(
        backend,
        &standard_models(&upstream.base_url()),
        "\n[webhooks]\nallow_private_networks = true\n",
    )
    .await;
    let doc = client::send("GET", &gw.url("/openapi.json"), "", None, &[])
        .await
        .json();
    let mut run = Run {
        gw: &gw,
        doc,
        checked: BTreeSet::new(),
    };

    // Operations.
    run.call("GET", "/healthz", &[], "", None, 200).await;
    run.call("GET", "/readyz", &[], "", None, 200).await;
    run.call("GET", "/metrics", &[], "", None, 200).await;
    run.call("GET", "/openapi.json", &[], "", None, 200).await;

    // Users, keys, credits (operator).
    let owner = run
        .call(
            "POST",
            "/api/users",
            &[],
            ADMIN,
            Some(json!({"email": "owner@openapi.test", "name": "Owner"})),
            201,
        )
        .await;
    let owner_id = owner["id"].as_str().unwrap().to_string();
    let owner_key = run
        .call(
            "POST",
            "/api/users/{user_id}/keys",
            &[&owner_id],
            ADMIN,
            Some(json!({"name": "laptop"})),
            201,
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    run.call(
        "POST",
        "/api/users/{user_id}/credits",
        &[&owner_id],
        ADMIN,
        Some(json!({"amount_usd": "10", "note": "start"})),
        200,
    )
    .await;
    run.call(
        "POST",
        "/api/users/{user_id}/credits",
        &[&owner_id],
        ADMIN,
        Some(json!({"amount_usd": 2.5})),
        200,
    )
    .await;
    let (admin_id, admin_key) = run.user("admin@openapi.test", "0").await;
    let (member_id, member_key) = run.user("member@openapi.test", "0").await;
    let (joiner_id, joiner_key) = run.user("joiner@openapi.test", "0").await;
    let (stranger_id, stranger_key) = run.user("stranger@openapi.test", "0").await;
    // Refusals.
    let dup = Some(json!({"email": "owner@openapi.test"}));
    run.call("POST", "/api/users", &[], ADMIN, dup, 409).await;
    let bad = Some(json!({"email": "not-an-email"}));
    let refused = run.call("POST", "/api/users", &[], ADMIN, bad, 400).await;
    assert_eq!(refused["error"]["param"], "email");
    let unknown = Some(json!({"email": "x@openapi.test", "admin": true}));
    let refused = run
        .call("POST", "/api/users", &[], ADMIN, unknown, 400)
        .await;
    assert_eq!(refused["error"]["param"], "admin");
    let by_user = Some(json!({"email": "y@openapi.test"}));
    run.call("POST", "/api/users", &[], &owner_key, by_user, 403)
        .await;
    let credit = Some(json!({"amount_usd": "1"}));
    run.call(
        "POST",
        "/api/users/{user_id}/credits",
        &["usr_nope"],
        ADMIN,
        credit,
        404,
    )
    .await;
    let negative = Some(json!({"amount_usd": "-1"}));
    run.call(
        "POST",
        "/api/users/{user_id}/credits",
        &[&owner_id],
        ADMIN,
        negative,
        400,
    )
    .await;
    run.call(
        "POST",
        "/api/users/{user_id}/keys",
        &["usr_nope"],
        ADMIN,
        None,
        404,
    )
    .await;

    // The caller's own account.
    run.call("GET", "/api/me", &[], "", None, 401).await;
    run.call(
        "GET",
        "/api/me",
        &[],
        "tg-not-a-real-key-0000000000000000000",
        None,
        401,
    )
    .await;
    run.call("GET", "/api/me", &[], ADMIN, None, 403).await;
    run.call("GET", "/api/me", &[], &owner_key, None, 200).await;
    run.call("GET", "/api/models", &[], &owner_key, None, 200)
        .await;
    // The outbox: the operator's; the list is empty with email off.
    let outbox = run
        .call("GET", "/api/email/outbox", &[], ADMIN, None, 200)
        .await;
    assert_eq!(outbox["email"], false);
    run.call("GET", "/api/email/outbox", &[], &owner_key, None, 403)
        .await;
    let key = run
        .call(
            "POST",
            "/api/me/keys",
            &[],
            &owner_key,
            Some(json!({"name": "ci", "tags": {"project": "alpha"}})),
            201,
        )
        .await;
    let key_id = key["id"].as_str().unwrap().to_string();
    run.call("POST", "/api/me/keys", &[], &owner_key, None, 201)
        .await;
    run.call("GET", "/api/me/keys", &[], &owner_key, None, 200)
        .await;
    let patch = Some(json!({"tags": null, "billing": "personal"}));
    run.call(
        "PATCH",
        "/api/me/keys/{key_id}",
        &[&key_id],
        &owner_key,
        patch,
        200,
    )
    .await;
    let empty = Some(json!({}));
    run.call(
        "PATCH",
        "/api/me/keys/{key_id}",
        &[&key_id],
        &owner_key,
        empty,
        400,
    )
    .await;
    run.call(
        "DELETE",
        "/api/me/keys/{key_id}",
        &[&key_id],
        &owner_key,
        None,
        200,
    )
    .await;
    run.call(
        "DELETE",
        "/api/me/keys/{key_id}",
        &[&key_id],
        &owner_key,
        None,
        404,
    )
    .await;

    // Teams.
    let team = run
        .call(
            "POST",
            "/api/teams",
            &[],
            &owner_key,
            Some(json!({"name": "Scenario"})),
            201,
        )
        .await;
    let team_id = team["id"].as_str().unwrap().to_string();
    let t = team_id.as_str();
    let operator_team = Some(json!({"name": "By the operator", "owner_id": stranger_id}));
    run.call("POST", "/api/teams", &[], ADMIN, operator_team, 201)
        .await;
    let nameless = Some(json!({"name": ""}));
    run.call("POST", "/api/teams", &[], &owner_key, nameless, 400)
        .await;
    run.call("GET", "/api/teams", &[], &owner_key, None, 200)
        .await;
    run.call("GET", "/api/teams", &[], ADMIN, None, 200).await;
    run.call("GET", "/api/teams/{team_id}", &[t], &owner_key, None, 200)
        .await;
    run.call(
        "GET",
        "/api/teams/{team_id}",
        &[t],
        &stranger_key,
        None,
        404,
    )
    .await;
    let settings = Some(json!({
        "restricted_models": ["gemini-*"],
        "low_balance_usd": "1",
        "default_monthly_limit_usd": null,
        "enforcement": "hard",
    }));
    run.call(
        "PATCH",
        "/api/teams/{team_id}",
        &[t],
        &owner_key,
        settings,
        200,
    )
    .await;
    let bad = Some(json!({"enforcement": "sometimes"}));
    let refused = run
        .call("PATCH", "/api/teams/{team_id}", &[t], &owner_key, bad, 400)
        .await;
    assert_eq!(refused["error"]["param"], "enforcement");

    // Webhooks, before anyone joins: member events are delivered.
    let hook = run
        .call(
            "POST",
            "/api/teams/{team_id}/webhooks",
            &[t],
            &owner_key,
            Some(json!({"url": hook_url, "events": ["member.joined", "member.left", "report.scheduled"]})),
            201,
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));
    let no_events = Some(json!({"url": hook_url, "events": []}));
    let refused = run
        .call(
            "POST",
            "/api/teams/{team_id}/webhooks",
            &[t],
            &owner_key,
            no_events,
            400,
        )
        .await;
    assert_eq!(refused["error"]["param"], "events");
    let ftp = Some(json!({"url": "ftp://example.com/x", "events": ["member.joined"]}));
    let refused = run
        .call(
            "POST",
            "/api/teams/{team_id}/webhooks",
            &[t],
            &owner_key,
            ftp,
            400,
        )
        .await;
    assert_eq!(refused["error"]["param"], "url");
    run.call(
        "GET",
        "/api/teams/{team_id}/webhooks",
        &[t],
        &owner_key,
        None,
        200,
    )
    .await;

    // Invitations.
    let invitation = run
        .call(
            "POST",
            "/api/teams/{team_id}/invitations",
            &[t],
            &owner_key,
            Some(json!({"email": "admin@openapi.test", "role": "admin", "expires_in_hours": 48})),
            201,
        )
        .await;
    let token = invitation["token"].as_str().unwrap().to_string();
    run.call("GET", "/api/invitations/{token}", &[&token], "", None, 200)
        .await;
    run.call(
        "GET",
        "/api/invitations/{token}",
        &["tgi_nope"],
        "",
        None,
        404,
    )
    .await;
    let accept = "/api/invitations/{token}/accept";
    run.call("POST", accept, &[&token], &stranger_key, None, 403)
        .await;
    run.call("POST", accept, &[&token], &admin_key, None, 200)
        .await;
    run.call("POST", accept, &[&token], &admin_key, None, 410)
        .await;
    run.call("POST", accept, &["tgi_nope"], &admin_key, None, 404)
        .await;
    let invite_member = Some(json!({"email": "member@openapi.test"}));
    let invitation = run
        .call(
            "POST",
            "/api/teams/{team_id}/invitations",
            &[t],
            &admin_key,
            invite_member,
            201,
        )
        .await;
    let token = invitation["token"].as_str().unwrap().to_string();
    run.call("POST", accept, &[&token], &member_key, None, 200)
        .await;
    let again = Some(json!({"email": "member@openapi.test"}));
    run.call(
        "POST",
        "/api/teams/{team_id}/invitations",
        &[t],
        &admin_key,
        again,
        409,
    )
    .await;
    let by_member = Some(json!({"email": "someone@openapi.test"}));
    run.call(
        "POST",
        "/api/teams/{team_id}/invitations",
        &[t],
        &member_key,
        by_member,
        403,
    )
    .await;
    let invite_stranger = Some(json!({"email": "stranger@openapi.test", "role": "member"}));
    let invitation = run
        .call(
            "POST",
            "/api/teams/{team_id}/invitations",
            &[t],
            &owner_key,
            invite_stranger,
            201,
        )
        .await;
    let invitation_id = invitation["id"].as_str().unwrap().to_string();
    let revoke = "/api/teams/{team_id}/invitations/{invitation_id}";
    run.call(
        "DELETE",
        revoke,
        &[t, &invitation_id],
        &owner_key,
        None,
        200,
    )
    .await;
    run.call(
        "DELETE",
        revoke,
        &[t, &invitation_id],
        &owner_key,
        None,
        409,
    )
    .await;
    run.call(
        "GET",
        "/api/teams/{team_id}/invitations",
        &[t],
        &admin_key,
        None,
        200,
    )
    .await;

    // The invite link and join requests.
    let link_route = "/api/teams/{team_id}/invite-link";
    let enable = Some(json!({"enabled": true}));
    let link = run
        .call("PUT", link_route, &[t], &admin_key, enable, 200)
        .await;
    let link_token = link["token"].as_str().unwrap().to_string();
    run.call("GET", "/api/join/{token}", &[&link_token], "", None, 200)
        .await;
    let joined = run
        .call(
            "POST",
            "/api/join/{token}",
            &[&link_token],
            &joiner_key,
            None,
            201,
        )
        .await;
    let join_id = joined["id"].as_str().unwrap().to_string();
    run.call(
        "POST",
        "/api/join/{token}",
        &[&link_token],
        &joiner_key,
        None,
        200,
    )
    .await;
    run.call(
        "POST",
        "/api/join/{token}",
        &[&link_token],
        &member_key,
        None,
        409,
    )
    .await;
    run.call(
        "GET",
        "/api/teams/{team_id}/join-requests",
        &[t],
        &admin_key,
        None,
        200,
    )
    .await;
    let approve = "/api/teams/{team_id}/join-requests/{request_id}/approve";
    run.call("POST", approve, &[t, &join_id], &admin_key, None, 200)
        .await;
    run.call("POST", approve, &[t, &join_id], &admin_key, None, 409)
        .await;
    let asked = run
        .call(
            "POST",
            "/api/join/{token}",
            &[&link_token],
            &stranger_key,
            None,
            201,
        )
        .await;
    let ask_id = asked["id"].as_str().unwrap().to_string();
    let deny = "/api/teams/{team_id}/join-requests/{request_id}/deny";
    run.call("POST", deny, &[t, &ask_id], &admin_key, None, 200)
        .await;
    run.call("POST", deny, &[t, "jr_nope"], &admin_key, None, 404)
        .await;
    let disable = Some(json!({"enabled": false}));
    run.call("PUT", link_route, &[t], &admin_key, disable, 200)
        .await;
    run.call("GET", "/api/join/{token}", &[&link_token], "", None, 404)
        .await;
    run.call(
        "PUT",
        link_route,
        &[t],
        &member_key,
        Some(json!({"enabled": true})),
        403,
    )
    .await;

    // Members.
    run.call(
        "GET",
        "/api/teams/{team_id}/members",
        &[t],
        &member_key,
        None,
        200,
    )
    .await;
    let member_route = "/api/teams/{team_id}/members/{user_id}";
    let to_owner = Some(json!({"role": "owner"}));
    run.call(
        "PATCH",
        member_route,
        &[t, &member_id],
        &admin_key,
        to_owner.clone(),
        403,
    )
    .await;
    run.call(
        "PATCH",
        member_route,
        &[t, &member_id],
        &owner_key,
        to_owner,
        409,
    )
    .await;
    let limit = Some(json!({"monthly_limit_usd": "5", "role": "member"}));
    run.call(
        "PATCH",
        member_route,
        &[t, &member_id],
        &admin_key,
        limit,
        200,
    )
    .await;
    let by_member = Some(json!({"monthly_limit_usd": "50"}));
    run.call(
        "PATCH",
        member_route,
        &[t, &member_id],
        &member_key,
        by_member,
        403,
    )
    .await;
    run.call(
        "DELETE",
        member_route,
        &[t, &owner_id],
        &admin_key,
        None,
        409,
    )
    .await;
    // The joiner leaves.
    run.call(
        "DELETE",
        member_route,
        &[t, &joiner_id],
        &joiner_key,
        None,
        200,
    )
    .await;

    // The model API.
    let team_billing = format!("team:{team_id}");
    let billing = [("x-tollgate-billing", team_billing.as_str())];
    run.send(
        Call {
            method: "GET",
            template: "/v1/models",
            key: &member_key,
            headers: &billing,
            ..Call::default()
        },
        200,
    )
    .await;
    run.call("GET", "/v1/models", &[], "", None, 401).await;
    run.chat(&owner_key, "gpt-5.1", "", 200).await;
    run.chat(&member_key, "gpt-5.1", &team_billing, 200).await;
    let tagged = [
        ("x-tollgate-billing", team_billing.as_str()),
        ("x-tollgate-tags", "project=alpha,env=test"),
    ];
    run.send(
        Call {
            method: "POST",
            template: "/v1/chat/completions",
            key: &member_key,
            body: Some(json!({"model": "gpt-5.1", "max_tokens": 400, "messages": [{"role": "user", "content": "tagged"}]})),
            headers: &tagged,
            ..Call::default()
        },
        200,
    )
    .await;
    let streamed = run
        .call(
            "POST",
            "/v1/chat/completions",
            &[],
            &owner_key,
            Some(json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})),
            200,
        )
        .await;
    assert!(streamed.as_str().unwrap().contains("data:"), "{streamed}");
    run.call(
        "POST",
        "/v1/completions",
        &[],
        &owner_key,
        Some(json!({"model": "gpt-4o-mini", "prompt": "Say this is a test", "max_tokens": 16})),
        200,
    )
    .await;
    run.call(
        "POST",
        "/v1/embeddings",
        &[],
        &owner_key,
        Some(json!({"model": "text-embedding-3-small", "input": ["a", "b"]})),
        200,
    )
    .await;
    run.call(
        "POST",
        "/v1/responses",
        &[],
        &owner_key,
        Some(
            json!({"model": "gpt-5-mini", "input": "hi", "stream": true, "max_output_tokens": 500}),
        ),
        200,
    )
    .await;
    let message = json!({"model": "claude-sonnet-4-5", "max_tokens": 300, "messages": [{"role": "user", "content": "notice period?"}]});
    run.call(
        "POST",
        "/v1/messages",
        &[],
        &owner_key,
        Some(message.clone()),
        200,
    )
    .await;
    let refused = run
        .call("POST", "/v1/messages", &[], "", Some(message), 401)
        .await;
    assert_eq!(refused["type"], "error");
    // Refusals of the model API.
    run.chat("", "gpt-5.1", "", 401).await;
    let refused = run.chat(&owner_key, "no-such-model", "", 404).await;
    assert_eq!(refused["error"]["code"], "model_not_found");
    let refused = run
        .chat(&member_key, "gemini-2.5-flash", &team_billing, 403)
        .await;
    assert_eq!(refused["error"]["code"], "model_not_allowed");
    assert_eq!(refused["error"]["scope"], "model_restriction");
    let refused = run.chat(&stranger_key, "gpt-5.1", &team_billing, 403).await;
    assert_eq!(refused["error"]["code"], "not_a_team_member");
    let refused = run.chat(&stranger_key, "gpt-5.1", "", 402).await;
    assert_eq!(refused["error"]["code"], "insufficient_balance");
    assert_eq!(refused["error"]["scope"], "balance");
    let refused = run
        .call(
            "POST",
            "/v1/chat/completions",
            &[],
            &owner_key,
            Some(json!({"messages": []})),
            400,
        )
        .await;
    assert_eq!(refused["error"]["code"], "invalid_request");
    // A hard member limit below one request's hold.
    let tiny = Some(json!({"monthly_limit_usd": "0.000001"}));
    run.call(
        "PATCH",
        member_route,
        &[t, &member_id],
        &owner_key,
        tiny,
        200,
    )
    .await;
    let refused = run.chat(&member_key, "gpt-5.1", &team_billing, 402).await;
    assert_eq!(refused["error"]["code"], "monthly_limit_exceeded");
    assert_eq!(refused["error"]["scope"], "member_monthly");

    // Headroom and the caller's usage.
    let limits = run
        .call("GET", "/api/me/limits", &[], &member_key, None, 200)
        .await;
    assert_eq!(limits["data"].as_array().unwrap().len(), 2, "{limits}");
    run.call("GET", "/api/me/limits", &[], ADMIN, None, 403)
        .await;
    gw.ledger_idle().await;
    run.call("GET", "/api/me/usage", &[], &member_key, None, 200)
        .await;
    run.send(
        Call {
            method: "GET",
            template: "/api/me/usage",
            query: "from=2020-01-01&to=2020-01-31",
            key: &owner_key,
            ..Call::default()
        },
        200,
    )
    .await;

    // Usage reports.
    let usage = "/api/teams/{team_id}/usage";
    for query in [
        "",
        "group_by=member",
        "group_by=model",
        "group_by=day&split_by=model",
        "group_by=day&split_by=member",
        "group_by=tag:project",
        "group_by=model&format=csv",
        "group_by=model&format=json&from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
    ] {
        let report = run
            .send(
                Call {
                    method: "GET",
                    template: usage,
                    args: &[t],
                    query,
                    key: &member_key,
                    ..Call::default()
                },
                200,
            )
            .await;
        if query == "group_by=tag:project" {
            let groups = report["groups"].as_array().unwrap();
            assert!(groups.iter().any(|g| g["key"] == "alpha"), "{report}");
        }
        if query.contains("csv") {
            assert!(report.as_str().unwrap().starts_with("key,label,requests"));
        }
    }
    for query in [
        "group_by=bogus",
        "from=yesterday",
        "format=xml",
        "colour=red",
    ] {
        run.send(
            Call {
                method: "GET",
                template: usage,
                args: &[t],
                query,
                key: &member_key,
                ..Call::default()
            },
            400,
        )
        .await;
    }
    run.call("GET", usage, &[t], &stranger_key, None, 404).await;

    // The report schedule.
    let schedule = "/api/teams/{team_id}/report-schedule";
    let send_now = "/api/teams/{team_id}/report-schedule/send";
    let none = run.call("GET", schedule, &[t], &admin_key, None, 200).await;
    assert!(none.is_null());
    run.call("POST", send_now, &[t], &admin_key, None, 404)
        .await;
    let daily = Some(json!({"cadence": "daily", "webhook_id": hook_id}));
    let refused = run
        .call("PUT", schedule, &[t], &admin_key, daily, 400)
        .await;
    assert_eq!(refused["error"]["param"], "cadence");
    let weekly = Some(json!({"cadence": "weekly", "group_by": "model", "webhook_id": hook_id}));
    run.call("PUT", schedule, &[t], &admin_key, weekly, 200)
        .await;
    let set = run.call("GET", schedule, &[t], &admin_key, None, 200).await;
    assert_eq!(set["cadence"], "weekly");
    run.call("GET", schedule, &[t], &member_key, None, 403)
        .await;
    run.call("POST", send_now, &[t], &admin_key, None, 202)
        .await;
    run.call("DELETE", schedule, &[t], &admin_key, None, 200)
        .await;
    run.call("PUT", schedule, &[t], &admin_key, Some(Value::Null), 200)
        .await;

    // Deliveries: the member events and the report reach the receiver.
    let deliveries = "/api/teams/{team_id}/webhooks/{webhook_id}/deliveries";
    let start = Instant::now();
    loop {
        let listed = run
            .call("GET", deliveries, &[t, &hook_id], &owner_key, None, 200)
            .await;
        let attempts = listed["data"].as_array().unwrap();
        if attempts.len() >= 3 && attempts.iter().all(|a| a["delivered"] == true) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deliveries not made in 60 s: {listed:#}; the receiver saw {}",
            receiver.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.call("GET", deliveries, &[t, "wh_nope"], &owner_key, None, 404)
        .await;

    // The audit trail.
    let audit = "/api/teams/{team_id}/audit";
    let trail = run.call("GET", audit, &[t], &admin_key, None, 200).await;
    assert!(!trail["data"].as_array().unwrap().is_empty());
    run.send(
        Call {
            method: "GET",
            template: audit,
            args: &[t],
            query: "limit=5",
            key: &owner_key,
            ..Call::default()
        },
        200,
    )
    .await;
    run.send(
        Call {
            method: "GET",
            template: audit,
            args: &[t],
            query: "limit=0",
            key: &owner_key,
            ..Call::default()
        },
        400,
    )
    .await;
    run.call("GET", audit, &[t], &member_key, None, 403).await;

    // Transfer, then the webhook and the team go.
    let transfer = "/api/teams/{team_id}/transfer";
    let to_stranger = Some(json!({"user_id": stranger_id}));
    run.call("POST", transfer, &[t], &owner_key, to_stranger, 400)
        .await;
    let to_admin = Some(json!({"user_id": admin_id}));
    run.call("POST", transfer, &[t], &admin_key, to_admin.clone(), 403)
        .await;
    run.call("POST", transfer, &[t], &owner_key, to_admin, 200)
        .await;
    let hook_route = "/api/teams/{team_id}/webhooks/{webhook_id}";
    run.call("DELETE", hook_route, &[t, &hook_id], &admin_key, None, 200)
        .await;
    run.call("DELETE", hook_route, &[t, &hook_id], &admin_key, None, 404)
        .await;
    run.call("GET", deliveries, &[t, &hook_id], &admin_key, None, 404)
        .await;
    run.call(
        "DELETE",
        "/api/teams/{team_id}",
        &[t],
        &owner_key,
        None,
        403,
    )
    .await;
    run.call(
        "DELETE",
        "/api/teams/{team_id}",
        &[t],
        &admin_key,
        None,
        200,
    )
    .await;
    run.call("GET", "/api/teams/{team_id}", &[t], &admin_key, None, 404)
        .await;

    // Every management route was called and answered with success.
    let succeeded: BTreeSet<(String, String)> = run
        .checked
        .iter()
        .filter(|(_, _, status)| (200..300).contains(status))
        .map(|(m, t, _)| (m.clone(), t.clone()))
        .collect();
    let not_called: Vec<_> = MANAGEMENT_ROUTES
        .iter()
        .chain(OTHER_ROUTES)
        .filter(|(m, t)| !succeeded.contains(&(m.to_string(), t.to_string())))
        .collect();
    assert!(not_called.is_empty(), "never answered 2xx: {not_called:#?}");
    let errors = run.checked.iter().filter(|(_, _, s)| *s >= 400).count();
    assert!(errors >= 40, "{errors} refusals checked");
    gw.finish().await;
}

/// The document's template for a concrete path: literal segments first,
/// then parameters (`/api/teams/tm_1/members` → `/api/teams/{id}/members`).
fn template_of<'d>(doc: &'d Value, method: &str, path: &str) -> Option<&'d str> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(&str, usize)> = None;
    for (template, item) in doc["paths"].as_object()? {
        if item.get(method.to_ascii_lowercase()).is_none() {
            continue;
        }
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let fits = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') {
                !s.is_empty()
            } else {
                literal += 1;
                t == s
            }
        });
        if fits && best.is_none_or(|(_, n)| literal > n) {
            best = Some((template.as_str(), literal));
        }
    }
    best.map(|(t, _)| t)
}

/// Checks every JSON answer of `/api` and `/v1` routes any integration test
/// receives against the document (called by the test client): a body that
/// does not match its documented schema fails the test that saw it.
pub fn check_answer(method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    if !(path.starts_with("/api/") || path.starts_with("/v1/")) {
        return;
    }
    if !content_type.starts_with("application/json") || body.is_empty() {
        return;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let doc = DOC.get_or_init(tollgate::openapi::document);
    let Some(template) = template_of(doc, method, path) else {
        return;
    };
    let Some(op) = operation(doc, method, template) else {
        return;
    };
    let Some(response) = response_for(doc, op, status) else {
        panic!("{method} {path} → {status}: the document has no such response for {template}");
    };
    let Some(schema) = response["content"]
        .get("application/json")
        .map(|c| &c["schema"])
    else {
        return;
    };
    let problems = Validator { doc }.check(schema, &value);
    assert!(
        problems.is_empty(),
        "{method} {path} → {status} does not match the document ({template}):\n{}\n\nbody: {value:#}",
        problems.join("\n")
    );
}
