//! `GET /openapi.json`: an OpenAPI 3.1 document of every route a client
//! may call (contract §2, §3, §4 and §6) with its request and response
//! schemas. It is built once with `json!`, kept in a `OnceLock` and served
//! without authentication.
//!
//! Schemas are JSON Schema 2020-12, honest but forgiving: `properties`
//! list every field a handler writes, `required` only those always
//! present, nullable fields are `"type": [T, "null"]`, and no object
//! forbids more properties (new fields are not a breaking change). Money
//! is a decimal string (`format: decimal`, e.g. `"0.0033475"`), times are
//! RFC 3339 (`format: date-time`). Model-route bodies are the upstream's,
//! passed through unchanged: their schemas name the usual fields and
//! require none. `tests/it/openapi.rs` checks real responses against this
//! document.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::http_body::Body;

/// `GET` or `HEAD /openapi.json`.
pub fn serve(method: &Method) -> Response<Body> {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    let bytes = DOCUMENT.get_or_init(|| Bytes::from(document().to_string()));
    let length = bytes.len();
    let mut response = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::full(bytes.clone())
    });
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (template, method, operation) in operations() {
        let item = paths
            .entry(template.to_string())
            .or_insert_with(|| path_item(template));
        if let Some(item) = item.as_object_mut() {
            item.insert(method.to_string(), operation.0.into());
        }
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Tollgate",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Inline metering gateway for LLM APIs.",
            "description": "One endpoint for OpenAI-compatible and Anthropic SDKs (`/v1`), a management API for users, keys, credits and teams (`/api`), and operations routes. Money is a decimal string in USD with up to 9 decimals (`\"12.5\"`, `\"0.000008850\"`) in fields ending `_usd`; money inputs also accept a JSON number, read as decimal text. Times are RFC 3339 UTC. Management errors use the OpenAI error shape; unknown fields and invalid values are 400 with `error.param` naming the field.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "models", "description": "The model API that SDKs call (`/v1`)."},
            {"name": "users", "description": "Users, keys and credits (operator), and the caller's own account."},
            {"name": "teams", "description": "Teams, their settings and members."},
            {"name": "invitations", "description": "Invitations by email, the invite link and join requests."},
            {"name": "reports", "description": "Usage reports, scheduled reports and the audit trail."},
            {"name": "webhooks", "description": "Webhooks and their deliveries."},
            {"name": "email", "description": "The mail outbox (invitations, scheduled reports, limit notices)."},
            {"name": "operations", "description": "Health, readiness, metrics and this document."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A user API key (`tg-…`), or on `/api` the operator token (`TOLLGATE_ADMIN_TOKEN`), which has owner rights on every team.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "A user API key in `x-api-key`, as Anthropic SDKs send it (`/v1/messages`).",
                },
            },
            "schemas": schemas(),
            "parameters": parameters(),
            "headers": headers(),
            "responses": error_responses(),
        },
    })
}

// ---------------------------------------------------------------------------
// Small builders.

/// A reference to a component schema.
fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An object schema with `required` fields and `properties`.
fn object(required: &[&str], properties: Value) -> Value {
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// `{data: [item]}`, the shape of every management list.
fn list_of(item: &str, description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": r(item)}},
    })
}

/// A schema that is `name` or JSON `null`.
fn or_null(name: &str) -> Value {
    json!({"anyOf": [r(name), {"type": "null"}]})
}

/// The path-level parameters of a template: one per `{name}`.
fn path_item(template: &str) -> Value {
    let parameters: Vec<Value> = template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": path_parameter(template, name),
                "schema": {"type": "string"},
            })
        })
        .collect();
    if parameters.is_empty() {
        json!({})
    } else {
        json!({"parameters": parameters})
    }
}

fn path_parameter(template: &str, name: &str) -> &'static str {
    match name {
        "team_id" => "A team's id (`tm_…`).",
        "user_id" => "A user's id (`usr_…`).",
        "key_id" => "An API key's id (`key_…`), one of the caller's own.",
        "invitation_id" => "An invitation's id (`inv_…`).",
        "request_id" => "A join request's id (`jr_…`).",
        "webhook_id" => "A webhook's id (`wh_…`).",
        "token" if template.starts_with("/api/join/") => {
            "The invite link's token (`tgl_…`); the token is the secret."
        }
        "token" => "The invitation's token (`tgi_…`); the token is the secret.",
        _ => "An id.",
    }
}

/// One operation, built field by field.
struct Op(Map<String, Value>);

impl Op {
    fn new(id: &str, tag: &str, summary: &str) -> Op {
        let mut map = Map::new();
        map.insert("operationId".into(), json!(id));
        map.insert("tags".into(), json!([tag]));
        map.insert("summary".into(), json!(summary));
        map.insert("responses".into(), json!({}));
        Op(map)
    }

    fn describe(mut self, text: &str) -> Op {
        self.0.insert("description".into(), json!(text));
        self
    }

    /// No credential needed.
    fn public(mut self) -> Op {
        self.0.insert("security".into(), json!([]));
        self
    }

    fn security(mut self, security: Value) -> Op {
        self.0.insert("security".into(), security);
        self
    }

    fn parameter(mut self, parameter: Value) -> Op {
        let list = self
            .0
            .entry("parameters")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = list.as_array_mut() {
            list.push(parameter);
        }
        self
    }

    fn query(self, name: &str, schema: Value, description: &str) -> Op {
        self.parameter(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": schema,
        }))
    }

    /// A parameter of `components.parameters`.
    fn shared(self, name: &str) -> Op {
        self.parameter(json!({"$ref": format!("#/components/parameters/{name}")}))
    }

    /// A JSON request body; `required` false when an empty body is read
    /// as `{}`.
    fn body(mut self, schema: Value, required: bool) -> Op {
        self.0.insert(
            "requestBody".into(),
            json!({
                "required": required,
                "content": {"application/json": {"schema": schema}},
            }),
        );
        self
    }

    fn response(mut self, status: &str, response: Value) -> Op {
        if let Some(responses) = self.0.get_mut("responses").and_then(Value::as_object_mut) {
            responses.insert(status.into(), response);
        }
        self
    }

    /// A JSON answer.
    fn reply(self, status: u16, description: &str, schema: Value) -> Op {
        self.response(
            &status.to_string(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": schema}},
            }),
        )
    }

    /// Error answers, from `components.responses`.
    fn errors(mut self, statuses: &[u16]) -> Op {
        for status in statuses {
            self = self.response(
                &status.to_string(),
                json!({"$ref": format!("#/components/responses/{}", error_name(*status))}),
            );
        }
        self
    }

    /// The errors of every authenticated management route, plus `more`.
    fn api_errors(self, more: &[u16]) -> Op {
        self.errors(more).errors(&[401, 429, 500])
    }

    /// The errors of a management route that reads a JSON body, plus `more`.
    fn body_errors(self, more: &[u16]) -> Op {
        self.api_errors(more).errors(&[400, 408, 413])
    }
}

// ---------------------------------------------------------------------------
// Routes.

fn operations() -> Vec<(&'static str, &'static str, Op)> {
    let mut all = Vec::new();
    all.extend(model_operations());
    all.extend(user_operations());
    all.extend(team_operations());
    all.extend(invitation_operations());
    all.extend(report_operations());
    all.extend(webhook_operations());
    all.extend(ops_operations());
    all
}

fn model_operations() -> Vec<(&'static str, &'static str, Op)> {
    let model_call = |id: &str, summary: &str, request: &str, answer: &str, streams: bool| {
        let mut content = json!({"application/json": {"schema": r(answer)}});
        if streams {
            content["text/event-stream"] = json!({
                "schema": {"type": "string", "description": "Server-sent events, as the upstream sends them (with `stream: true`)."},
            });
        }
        Op::new(id, "models", summary)
            .shared("Billing")
            .shared("Tags")
            .body(r(request), true)
            .response(
                "200",
                json!({
                    "description": "The upstream's answer, unchanged except `model` (streams: the usage chunk the gateway asked for is not shown).",
                    "headers": {
                        "x-request-id": {"$ref": "#/components/headers/RequestId"},
                        "x-tollgate-limit-warning": {"$ref": "#/components/headers/LimitWarning"},
                    },
                    "content": content,
                }),
            )
            .errors(&[
                400, 401, 402, 403, 404, 408, 413, 415, 429, 500, 502, 503, 504,
            ])
            .response("default", json!({
                "description": "An upstream's own error status, passed through unchanged (status and body).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }))
    };
    let messages_errors = [
        400, 401, 402, 403, 404, 408, 413, 415, 429, 500, 502, 503, 504,
    ];
    let mut messages = Op::new("createMessage", "models", "Anthropic Messages")
        .describe("Anthropic Messages passthrough, JSON and streaming. The key may come as `x-api-key`. Tollgate's own refusals use the Anthropic error shape, with the same statuses and, on 402 and 403 `model_not_allowed`, the same machine-readable fields.")
        .security(json!([{"apiKey": []}, {"bearer": []}]))
        .shared("Billing")
        .shared("Tags")
        .body(r("MessageRequest"), true)
        .response(
            "200",
            json!({
                "description": "The upstream's answer, unchanged except `model`.",
                "headers": {
                    "x-request-id": {"$ref": "#/components/headers/RequestId"},
                    "x-tollgate-limit-warning": {"$ref": "#/components/headers/LimitWarning"},
                },
                "content": {
                    "application/json": {"schema": r("Message")},
                    "text/event-stream": {"schema": {"type": "string", "description": "Server-sent events, as the upstream sends them."}},
                },
            }),
        );
    for status in messages_errors {
        messages = messages.response(
            &status.to_string(),
            json!({
                "description": error_description(status),
                "content": {"application/json": {"schema": r("AnthropicError")}},
            }),
        );
    }
    messages = messages.response(
        "default",
        json!({
            "description": "An upstream's own error status, passed through unchanged (status and body).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }),
    );
    vec![
        (
            "/v1/chat/completions",
            "post",
            model_call(
                "createChatCompletion",
                "Chat completions (JSON, or SSE with `stream: true`)",
                "ChatCompletionRequest",
                "ChatCompletion",
                true,
            ),
        ),
        (
            "/v1/completions",
            "post",
            model_call(
                "createCompletion",
                "Legacy completions",
                "CompletionRequest",
                "Completion",
                true,
            ),
        ),
        (
            "/v1/embeddings",
            "post",
            model_call(
                "createEmbedding",
                "Embeddings",
                "EmbeddingRequest",
                "EmbeddingList",
                false,
            ),
        ),
        (
            "/v1/responses",
            "post",
            model_call(
                "createResponse",
                "Responses (JSON and streaming events)",
                "ResponseRequest",
                "ResponseObject",
                true,
            )
            .describe("`background: true` cannot be metered and is refused (400 `unmeterable_request`)."),
        ),
        ("/v1/messages", "post", messages),
        (
            "/v1/models",
            "get",
            Op::new("listModels", "models", "The models this key may use")
                .describe("A team's model restrictions apply when the key, or `x-tollgate-billing`, bills that team.")
                .shared("Billing")
                .reply(200, "The models.", r("ModelList"))
                .errors(&[400, 401, 403, 500]),
        ),
    ]
}

fn user_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/api/users",
            "post",
            Op::new("createUser", "users", "Create a user (operator)")
                .body(r("UserCreate"), true)
                .reply(201, "The user.", r("User"))
                .body_errors(&[403, 409]),
        ),
        (
            "/api/users/{user_id}/keys",
            "post",
            Op::new("createUserKey", "users", "Issue an API key for a user (operator)")
                .body(r("KeyCreate"), false)
                .reply(201, "The key; `key` is shown only here.", r("CreatedKey"))
                .body_errors(&[403, 404]),
        ),
        (
            "/api/users/{user_id}/credits",
            "post",
            Op::new("addCredits", "users", "Add credits to a user's balance (operator)")
                .body(r("CreditCreate"), true)
                .reply(200, "The new balance.", r("CreditResult"))
                .body_errors(&[403, 404, 503]),
        ),
        (
            "/api/me",
            "get",
            Op::new("getMe", "users", "The caller, their balance and teams")
                .reply(200, "The caller.", r("Me"))
                .api_errors(&[403, 503]),
        ),
        (
            "/api/me/usage",
            "get",
            Op::new("getMyUsage", "reports", "The caller's own usage wherever it was billed")
                .query("from", r("ReportBound"), "Start: a date (whole UTC day) or an RFC 3339 instant. Default: the start of this month.")
                .query("to", r("ReportBound"), "End: a date (inclusive) or an RFC 3339 instant (exclusive). Default: the end of this month.")
                .reply(200, "Totals, by day, by model and by payer.", r("MyUsage"))
                .api_errors(&[400, 403, 503]),
        ),
        (
            "/api/me/limits",
            "get",
            Op::new("getMyLimits", "users", "Headroom for each billing target the caller may use")
                .reply(200, "One entry for `personal`, then one per team.", list_of("Headroom", "Headroom per billing target."))
                .api_errors(&[403, 503]),
        ),
        (
            "/api/models",
            "get",
            Op::new("listConfiguredModels", "users", "Every configured model, unfiltered")
                .reply(200, "The models.", list_of("ConfiguredModel", "Every configured model."))
                .api_errors(&[]),
        ),
        (
            "/api/me/keys",
            "get",
            Op::new("listMyKeys", "users", "The caller's API keys (revoked ones included)")
                .reply(200, "The keys.", list_of("ApiKey", "The caller's keys."))
                .api_errors(&[403]),
        ),
        (
            "/api/me/keys",
            "post",
            Op::new("createMyKey", "users", "Create an API key for the caller")
                .body(r("KeyCreate"), false)
                .reply(201, "The key; `key` is shown only here.", r("CreatedKey"))
                .body_errors(&[403]),
        ),
        (
            "/api/me/keys/{key_id}",
            "patch",
            Op::new("updateMyKey", "users", "Switch a key's billing target or default tags")
                .body(r("KeyPatch"), true)
                .reply(200, "The key.", r("ApiKey"))
                .body_errors(&[403, 404]),
        ),
        (
            "/api/me/keys/{key_id}",
            "delete",
            Op::new("revokeMyKey", "users", "Revoke a key (the row stays for history)")
                .reply(200, "The revoked key.", r("ApiKey"))
                .api_errors(&[403, 404]),
        ),
    ]
}

fn team_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/api/teams",
            "post",
            Op::new("createTeam", "teams", "Create a team; the caller becomes its owner")
                .describe("The operator names the owner with `owner_id`.")
                .body(r("TeamCreate"), true)
                .reply(201, "The team's overview.", r("TeamOverview"))
                .body_errors(&[503]),
        ),
        (
            "/api/teams",
            "get",
            Op::new("listTeams", "teams", "The caller's teams (every team for the operator)")
                .reply(200, "The teams.", list_of("TeamListItem", "Teams and the caller's role."))
                .api_errors(&[]),
        ),
        (
            "/api/teams/{team_id}",
            "get",
            Op::new("getTeam", "teams", "A team's overview (member)")
                .reply(200, "The overview.", r("TeamOverview"))
                .api_errors(&[404, 503]),
        ),
        (
            "/api/teams/{team_id}",
            "patch",
            Op::new("updateTeam", "teams", "Change a team's settings (admin; `low_balance_usd` owner)")
                .body(r("TeamPatch"), true)
                .reply(200, "The overview.", r("TeamOverview"))
                .body_errors(&[403, 404, 503]),
        ),
        (
            "/api/teams/{team_id}",
            "delete",
            Op::new("deleteTeam", "teams", "Delete a team (owner; soft)")
                .reply(200, "Deleted.", r("Deleted"))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/transfer",
            "post",
            Op::new("transferTeam", "teams", "Transfer ownership to a member (owner)")
                .describe("The old owner becomes an admin; billing follows the new owner from the next request.")
                .body(r("TransferRequest"), true)
                .reply(200, "The overview.", r("TeamOverview"))
                .body_errors(&[403, 404, 503]),
        ),
        (
            "/api/teams/{team_id}/members",
            "get",
            Op::new("listMembers", "teams", "Members with role, month spend and limits (member)")
                .reply(200, "The members.", list_of("Member", "The team's members."))
                .api_errors(&[404]),
        ),
        (
            "/api/teams/{team_id}/members/{user_id}",
            "patch",
            Op::new("updateMember", "teams", "Change a member's role or monthly limit (admin)")
                .describe("`monthly_limit_usd: null` clears the override. The owner role moves only by transfer (409).")
                .body(r("MemberPatch"), true)
                .reply(200, "The member.", r("Member"))
                .body_errors(&[403, 404, 409]),
        ),
        (
            "/api/teams/{team_id}/members/{user_id}",
            "delete",
            Op::new("removeMember", "teams", "Remove a member (admin), or leave (anyone)")
                .describe("The owner cannot be removed or leave (409): transfer first.")
                .reply(200, "Removed.", r("MemberRemoved"))
                .api_errors(&[403, 404, 409]),
        ),
    ]
}

fn invitation_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/api/teams/{team_id}/invitations",
            "post",
            Op::new("createInvitation", "invitations", "Invite an email address (admin)")
                .body(r("InvitationCreate"), true)
                .reply(201, "The invitation; `token` and `url` are shown only here.", r("CreatedInvitation"))
                .body_errors(&[403, 404, 409]),
        ),
        (
            "/api/teams/{team_id}/invitations",
            "get",
            Op::new("listInvitations", "invitations", "A team's invitations (admin; no tokens)")
                .reply(200, "The invitations.", list_of("Invitation", "The team's invitations."))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/invitations/{invitation_id}",
            "delete",
            Op::new("revokeInvitation", "invitations", "Revoke a pending invitation (admin)")
                .reply(200, "The revoked invitation.", r("Invitation"))
                .api_errors(&[403, 404, 409]),
        ),
        (
            "/api/teams/{team_id}/invite-link",
            "put",
            Op::new("setInviteLink", "invitations", "Enable (a fresh link) or disable the invite link (admin)")
                .body(r("InviteLinkRequest"), true)
                .reply(200, "The link, or `{enabled: false}`.", r("InviteLink"))
                .body_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/join-requests",
            "get",
            Op::new("listJoinRequests", "invitations", "A team's join requests (admin)")
                .reply(200, "The join requests.", list_of("JoinRequest", "The team's join requests."))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/join-requests/{request_id}/approve",
            "post",
            Op::new("approveJoinRequest", "invitations", "Approve a pending join request (admin)")
                .reply(200, "The join request.", r("JoinRequest"))
                .api_errors(&[403, 404, 409]),
        ),
        (
            "/api/teams/{team_id}/join-requests/{request_id}/deny",
            "post",
            Op::new("denyJoinRequest", "invitations", "Deny a pending join request (admin)")
                .reply(200, "The join request.", r("JoinRequest"))
                .api_errors(&[403, 404, 409]),
        ),
        (
            "/api/invitations/{token}",
            "get",
            Op::new("describeInvitation", "invitations", "What an invitation is for (no credential)")
                .public()
                .reply(200, "The invitation's team, role, address and state.", r("InvitationPreview"))
                .errors(&[404, 429, 500]),
        ),
        (
            "/api/invitations/{token}/accept",
            "post",
            Op::new("acceptInvitation", "invitations", "Accept an invitation")
                .describe("Unknown token 404; used, expired or revoked 410; the caller's email differs 403 (the invitation stays usable); already a member 409.")
                .reply(200, "The team joined and the role.", r("InvitationAccepted"))
                .api_errors(&[403, 404, 409, 410]),
        ),
        (
            "/api/join/{token}",
            "get",
            Op::new("describeJoinLink", "invitations", "The team an invite link is for (no credential)")
                .public()
                .reply(200, "The team.", r("JoinLinkPreview"))
                .errors(&[404, 429, 500]),
        ),
        (
            "/api/join/{token}",
            "post",
            Op::new("requestToJoin", "invitations", "Ask to join through an invite link")
                .describe("Unknown or disabled link 404; already a member 409. A caller with a pending request gets it back (200).")
                .reply(200, "The caller's pending join request, already made.", r("JoinRequest"))
                .reply(201, "A new pending join request.", r("JoinRequest"))
                .api_errors(&[403, 404, 409]),
        ),
    ]
}

fn report_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/api/teams/{team_id}/usage",
            "get",
            Op::new("getTeamUsage", "reports", "A team's usage report (member)")
                .query("from", r("ReportBound"), "Start: a date (whole UTC day) or an RFC 3339 instant. Default: the start of this month.")
                .query("to", r("ReportBound"), "End: a date (inclusive) or an RFC 3339 instant (exclusive). Default: the end of this month.")
                .query("group_by", r("GroupBy"), "member (default), model, day, or tag:<key>.")
                .query("format", json!({"type": "string", "enum": ["json", "csv"]}), "json (default) or csv.")
                .query("split_by", json!({"type": "string", "enum": ["member", "model"]}), "With group_by=day and JSON: each day's parts by member or model.")
                .response(
                    "200",
                    json!({
                        "description": "The report. CSV: a header row `key,label,requests,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd` (then the parts' columns) and one row per group.",
                        "content": {
                            "application/json": {"schema": r("UsageReport")},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    }),
                )
                .api_errors(&[400, 404]),
        ),
        (
            "/api/teams/{team_id}/audit",
            "get",
            Op::new("getAudit", "reports", "A team's audit trail, newest first (admin)")
                .query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "How many entries (default 200).")
                .reply(200, "The entries.", list_of("AuditEntry", "Audit entries, newest first."))
                .api_errors(&[400, 403, 404]),
        ),
        (
            "/api/teams/{team_id}/report-schedule",
            "get",
            Op::new("getReportSchedule", "reports", "The team's report schedule, or null (admin)")
                .reply(200, "The schedule, or `null` when none.", or_null("ReportSchedule"))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/report-schedule",
            "put",
            Op::new("setReportSchedule", "reports", "Set the report schedule; a null body stops it (admin)")
                .body(r("ReportScheduleRequest"), true)
                .reply(200, "The schedule, or `null` when stopped.", or_null("ReportSchedule"))
                .body_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/report-schedule",
            "delete",
            Op::new("deleteReportSchedule", "reports", "Stop the report schedule (admin)")
                .reply(200, "Stopped: `null`.", json!({"type": "null"}))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/report-schedule/send",
            "post",
            Op::new("sendReportNow", "reports", "Send the report of the period so far (admin)")
                .describe("A `report.scheduled` event with `data.partial = true` goes to the schedule's webhook. No schedule: 404.")
                .reply(202, "The event recorded.", r("ReportSent"))
                .api_errors(&[403, 404]),
        ),
    ]
}

fn webhook_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/api/teams/{team_id}/webhooks",
            "post",
            Op::new("createWebhook", "webhooks", "Add a webhook (admin)")
                .describe("Only http/https; targets in loopback or private networks are refused (400, `param` `url`) unless the operator allows them. An unknown or empty `events` is 400 with `param` `events`.")
                .body(r("WebhookCreate"), true)
                .reply(201, "The webhook; `secret` is shown only here.", r("CreatedWebhook"))
                .body_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/webhooks",
            "get",
            Op::new("listWebhooks", "webhooks", "A team's webhooks (admin; no secrets)")
                .reply(200, "The webhooks.", list_of("Webhook", "The team's webhooks."))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/webhooks/{webhook_id}",
            "delete",
            Op::new("deleteWebhook", "webhooks", "Delete a webhook and its pending deliveries (admin)")
                .reply(200, "Deleted.", r("Deleted"))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/teams/{team_id}/webhooks/{webhook_id}/deliveries",
            "get",
            Op::new("listDeliveries", "webhooks", "A webhook's latest 100 delivery attempts, newest first (admin)")
                .reply(200, "The attempts.", list_of("Delivery", "Delivery attempts, newest first."))
                .api_errors(&[403, 404]),
        ),
        (
            "/api/email/outbox",
            "get",
            Op::new("listOutbox", "email", "The mail the gateway wrote and how it went, newest first (operator)")
                .query("status", json!({"type": "string", "enum": ["pending", "sent", "failed", "capped"]}), "Only mail in this state.")
                .query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "At most this many (default 100).")
                .reply(200, "The mail.", r("Outbox"))
                .api_errors(&[400, 403]),
        ),
    ]
}

fn ops_operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        (
            "/healthz",
            "get",
            Op::new("healthz", "operations", "The process is up")
                .public()
                .reply(200, "Up.", r("Health")),
        ),
        (
            "/readyz",
            "get",
            Op::new(
                "readyz",
                "operations",
                "Whether the gateway serves, per component",
            )
            .public()
            .reply(200, "Serving (`status` ok or degraded).", r("Readiness"))
            .reply(503, "Refusing traffic.", r("Readiness")),
        ),
        (
            "/metrics",
            "get",
            Op::new("metrics", "operations", "Prometheus metrics")
                .describe(
                    "With `server.metrics_token` set, that token is required as a Bearer token.",
                )
                .security(json!([{}, {"bearer": []}]))
                .response(
                    "200",
                    json!({
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }),
                )
                .errors(&[401]),
        ),
        (
            "/openapi.json",
            "get",
            Op::new("openapi", "operations", "This document")
                .public()
                .reply(200, "The OpenAPI 3.1 document.", json!({"type": "object"})),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Errors.

fn error_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        402 => "PaymentRequired",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "RequestTimeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "PayloadTooLarge",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        502 => "BadGateway",
        503 => "Unavailable",
        504 => "GatewayTimeout",
        _ => "InternalError",
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Invalid request: malformed JSON, an unknown field or an invalid value (`error.param` names it); `unmeterable_request` on the model routes.",
        401 => "No credential, or an unknown or revoked one (`invalid_api_key`).",
        402 => "A money refusal (`insufficient_balance` or `monthly_limit_exceeded`, type `insufficient_quota`), with `scope`, `hold_usd` and the figures of the scope. Not retried (`x-should-retry: false`).",
        403 => "A role too low, a user key on an operator route, the operator token on a user route, `not_a_team_member`, or `model_not_allowed` (with `scope` `model_restriction`).",
        404 => "Not found: a team the caller is not in (or a deleted one), an unknown id or token, or `model_not_found`.",
        405 => "Method not allowed.",
        408 => "The request body did not arrive in time (`request_timeout`).",
        409 => "A conflict with the team's rules or the current state.",
        410 => "The invitation was used, expired or revoked.",
        413 => "The request body is too large.",
        415 => "The body must be `application/json`.",
        429 => "Too many requests: the key's rpm limit, or too many failed credentials from this address (`rate_limit_exceeded`, `retry-after`).",
        502 => "The upstream provider could not be reached (`upstream_error`).",
        503 => "Temporarily unavailable (`unavailable`, `retry-after`).",
        504 => "The upstream provider did not answer in time (`upstream_error`).",
        _ => "Internal error; the gateway logged the details.",
    }
}

fn error_responses() -> Value {
    let mut responses = Map::new();
    for status in [
        400, 401, 402, 403, 404, 405, 408, 409, 410, 413, 415, 429, 500, 502, 503, 504,
    ] {
        let mut response = json!({
            "description": error_description(status),
            "content": {"application/json": {"schema": r("Error")}},
        });
        let header = match status {
            402 => Some(("x-should-retry", "ShouldRetry")),
            429 | 503 => Some(("retry-after", "RetryAfter")),
            _ => None,
        };
        if let Some((name, component)) = header {
            response["headers"] =
                json!({ name: {"$ref": format!("#/components/headers/{component}")} });
        }
        responses.insert(error_name(status).into(), response);
    }
    Value::Object(responses)
}

fn parameters() -> Value {
    json!({
        "Billing": {
            "name": "x-tollgate-billing",
            "in": "header",
            "required": false,
            "description": "Who pays for this call: `personal`, or `team:<team_id>` (the caller must be a member). Default: the key's billing target.",
            "schema": {"type": "string"},
        },
        "Tags": {
            "name": "x-tollgate-tags",
            "in": "header",
            "required": false,
            "description": "Cost allocation tags, `key=value` pairs separated by commas (at most 10; key `[a-z0-9_.-]{1,64}`, value up to 128 printable characters). They win over the key's default tags per key.",
            "schema": {"type": "string"},
        },
    })
}

fn headers() -> Value {
    json!({
        "RequestId": {
            "description": "The id of the request's attribution row.",
            "schema": {"type": "string"},
        },
        "LimitWarning": {
            "description": "A soft limit was passed: the request was served and the event recorded.",
            "schema": {"type": "string"},
        },
        "ShouldRetry": {
            "description": "`false`: retrying will not help.",
            "schema": {"type": "string", "enum": ["false"]},
        },
        "RetryAfter": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        },
    })
}

// ---------------------------------------------------------------------------
// Schemas.

fn schemas() -> Value {
    let mut all = Map::new();
    for group in [
        scalar_schemas(),
        error_schemas(),
        user_schemas(),
        team_schemas(),
        invitation_schemas(),
        report_schemas(),
        webhook_schemas(),
        model_request_schemas(),
        model_answer_schemas(),
        ops_schemas(),
    ] {
        if let Value::Object(group) = group {
            all.extend(group);
        }
    }
    Value::Object(all)
}

fn scalar_schemas() -> Value {
    json!({
        "Money": {
            "type": "string",
            "format": "decimal",
            "description": "USD as a decimal string with up to 9 decimals, e.g. \"0.0033475\" or \"5.0\".",
            "examples": ["0.0033475", "5.0"],
        },
        "NullableMoney": {
            "type": ["string", "null"],
            "format": "decimal",
            "description": "USD as a decimal string, or null (none).",
        },
        "MoneyInput": {
            "type": ["string", "number"],
            "description": "USD as a decimal string or a JSON number, read as decimal text (never through a float); at most 9 decimals.",
            "examples": ["25", 2.5],
        },
        "NullableMoneyInput": {
            "type": ["string", "number", "null"],
            "description": "USD as a decimal string or a JSON number; null clears.",
        },
        "DateTime": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."},
        "NullableDateTime": {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339, UTC, or null."},
        "ReportBound": {
            "type": "string",
            "description": "A date (`YYYY-MM-DD`, a whole UTC day) or an RFC 3339 instant.",
        },
        "Role": {"type": "string", "enum": ["owner", "admin", "member"]},
        "Enforcement": {"type": "string", "enum": ["soft", "hard"], "description": "Hard limits refuse (402); soft limits warn in a header."},
        "Billing": {
            "type": "string",
            "description": "`personal` or `team:<team_id>`.",
            "examples": ["personal", "team:tm_4xQ2"],
        },
        "Tags": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Cost allocation tags: key `[a-z0-9_.-]{1,64}` → value (up to 128 printable characters); at most 10.",
        },
        "GroupBy": {
            "type": "string",
            "description": "`member`, `model`, `day`, or `tag:<key>` (groups by that tag's value; rows without it: key \"\", label \"(none)\").",
            "examples": ["member", "model", "day", "tag:project"],
        },
        "EventType": {"type": "string", "enum": crate::store::events::EVENT_TYPES},
        "TeamRef": object(&["id", "name"], json!({
            "id": {"type": "string"},
            "name": {"type": "string"},
        })),
        "Deleted": object(&["id", "deleted"], json!({
            "id": {"type": "string"},
            "deleted": {"type": "boolean", "const": true},
        })),
    })
}

fn error_schemas() -> Value {
    let figures = json!({
        "scope": {"type": "string", "enum": ["balance", "member_monthly", "model_restriction"], "description": "On 402 and 403 `model_not_allowed`: what refused."},
        "hold_usd": {"$ref": "#/components/schemas/Money", "description": "402: what the request would have held."},
        "balance_usd": {"$ref": "#/components/schemas/Money", "description": "402, scope `balance`: the paying account's balance."},
        "limit_usd": {"$ref": "#/components/schemas/Money", "description": "402, scope `member_monthly`: the limit."},
        "spent_usd": {"$ref": "#/components/schemas/Money", "description": "402, scope `member_monthly`: settled this month plus holds in flight."},
        "resets_at": {"$ref": "#/components/schemas/DateTime", "description": "402, scope `member_monthly`: when the limit resets."},
    });
    let mut openai = figures.clone();
    if let Some(map) = openai.as_object_mut() {
        map.insert("message".into(), json!({"type": "string"}));
        map.insert(
            "type".into(),
            json!({"type": "string", "examples": ["invalid_request_error", "insufficient_quota", "permission_error", "requests", "server_error"]}),
        );
        map.insert(
            "param".into(),
            json!({"type": ["string", "null"], "description": "The field, query parameter or header at fault, if any."}),
        );
        map.insert(
            "code".into(),
            json!({"type": "string", "examples": ["invalid_api_key", "model_not_found", "model_not_allowed", "monthly_limit_exceeded", "insufficient_balance", "rate_limit_exceeded", "invalid_request", "unmeterable_request", "not_a_team_member", "forbidden", "not_found", "conflict", "gone", "upstream_error", "unavailable", "internal_error"]}),
        );
    }
    let mut anthropic = figures;
    if let Some(map) = anthropic.as_object_mut() {
        map.insert("message".into(), json!({"type": "string"}));
        map.insert(
            "type".into(),
            json!({"type": "string", "examples": ["invalid_request_error", "authentication_error", "billing_error", "permission_error", "not_found_error", "request_too_large", "rate_limit_error", "api_error"]}),
        );
    }
    json!({
        "Error": {
            "type": "object",
            "description": "The OpenAI error shape.",
            "required": ["error"],
            "properties": {
                "error": object(&["message", "type", "param", "code"], openai),
            },
        },
        "AnthropicError": {
            "type": "object",
            "description": "The Anthropic error shape (`/v1/messages`).",
            "required": ["type", "error"],
            "properties": {
                "type": {"type": "string", "const": "error"},
                "error": object(&["type", "message"], anthropic),
            },
        },
    })
}

fn user_schemas() -> Value {
    json!({
        "UserCreate": object(&["email"], json!({
            "email": {"type": "string", "format": "email"},
            "name": {"type": ["string", "null"], "maxLength": 200},
        })),
        "User": object(&["id", "email", "name", "created_at", "balance_usd"], json!({
            "id": {"type": "string"},
            "email": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "created_at": r("DateTime"),
            "balance_usd": r("Money"),
        })),
        "Me": object(&["id", "email", "name", "created_at", "balance_usd", "teams"], json!({
            "id": {"type": "string"},
            "email": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "created_at": r("DateTime"),
            "balance_usd": r("Money"),
            "teams": {"type": "array", "items": r("TeamListItem")},
        })),
        "KeyCreate": object(&[], json!({
            "name": {"type": ["string", "null"], "maxLength": 200},
            "billing": {"type": ["string", "null"], "description": "`personal` (default) or `team:<team_id>`; the caller must be a member."},
            "tags": {"type": ["object", "null"], "additionalProperties": {"type": "string"}, "description": "Default cost allocation tags."},
        })),
        "KeyPatch": object(&[], json!({
            "billing": {"type": "string", "description": "`personal` or `team:<team_id>`."},
            "tags": {"type": ["object", "null"], "additionalProperties": {"type": "string"}, "description": "null or {} clears the default tags."},
        })),
        "ApiKey": object(&["id", "name", "prefix", "billing", "tags", "created_at", "revoked_at"], json!({
            "id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "prefix": {"type": "string", "description": "The first characters of the key, to recognise it."},
            "billing": r("Billing"),
            "tags": r("Tags"),
            "created_at": r("DateTime"),
            "revoked_at": r("NullableDateTime"),
        })),
        "CreatedKey": {
            "allOf": [r("ApiKey")],
            "required": ["key"],
            "properties": {"key": {"type": "string", "description": "The API key (`tg-…`), shown once."}},
        },
        "CreditCreate": object(&["amount_usd"], json!({
            "amount_usd": r("MoneyInput"),
            "note": {"type": ["string", "null"], "maxLength": 500},
        })),
        "CreditResult": object(&["user_id", "amount_usd", "balance_usd"], json!({
            "user_id": {"type": "string"},
            "amount_usd": r("Money"),
            "balance_usd": r("Money"),
        })),
        "Headroom": object(
            &["billing", "balance_usd", "limit_usd", "spent_usd", "remaining_usd", "enforcement", "resets_at", "binding"],
            json!({
                "billing": r("Billing"),
                "balance_usd": {"$ref": "#/components/schemas/Money", "description": "The paying account's balance (the owner's for a team)."},
                "limit_usd": r("NullableMoney"),
                "spent_usd": r("NullableMoney"),
                "remaining_usd": {"$ref": "#/components/schemas/Money", "description": "min(limit − spent, balance), never below zero: the largest hold the next request may take."},
                "enforcement": {"type": ["string", "null"], "enum": ["soft", "hard", null]},
                "resets_at": r("NullableDateTime"),
                "binding": {"type": "string", "enum": ["balance", "member_monthly"]},
                "team_id": {"type": "string"},
                "team_name": {"type": "string"},
            }),
        ),
        "ConfiguredModel": object(&["id", "provider"], json!({
            "id": {"type": "string"},
            "provider": {"type": "string"},
        })),
    })
}

fn team_schemas() -> Value {
    json!({
        "TeamCreate": object(&["name"], json!({
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "owner_id": {"type": "string", "description": "Operator only: the owner."},
        })),
        "TeamListItem": object(&["id", "name", "role"], json!({
            "id": {"type": "string"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["owner", "admin", "member", "operator"]},
        })),
        "TeamOverview": object(
            &["id", "name", "owner_id", "balance_usd", "member_count", "pending_join_requests", "spend_this_month_usd", "default_monthly_limit_usd", "enforcement", "restricted_models", "low_balance_usd", "invite_link_enabled", "created_at"],
            json!({
                "id": {"type": "string"},
                "name": {"type": "string"},
                "owner_id": {"type": "string"},
                "balance_usd": {"$ref": "#/components/schemas/Money", "description": "The owner's balance."},
                "member_count": {"type": "integer"},
                "pending_join_requests": {"type": "integer"},
                "spend_this_month_usd": r("Money"),
                "default_monthly_limit_usd": r("NullableMoney"),
                "enforcement": r("Enforcement"),
                "restricted_models": {"type": "array", "items": {"type": "string"}, "description": "Exact model names or globs like `claude-opus-*`."},
                "low_balance_usd": r("NullableMoney"),
                "invite_link_enabled": {"type": "boolean"},
                "created_at": r("DateTime"),
            }),
        ),
        "TeamPatch": object(&[], json!({
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "default_monthly_limit_usd": r("NullableMoneyInput"),
            "enforcement": r("Enforcement"),
            "restricted_models": {"type": "array", "items": {"type": "string"}},
            "low_balance_usd": {"$ref": "#/components/schemas/NullableMoneyInput", "description": "Owner only."},
        })),
        "TransferRequest": object(&["user_id"], json!({
            "user_id": {"type": "string", "description": "An existing member."},
        })),
        "Member": object(
            &["user_id", "email", "role", "spend_this_month_usd", "monthly_limit_usd", "effective_limit_usd", "enforcement", "joined_at"],
            json!({
                "user_id": {"type": "string"},
                "email": {"type": "string"},
                "role": r("Role"),
                "spend_this_month_usd": r("Money"),
                "monthly_limit_usd": {"$ref": "#/components/schemas/NullableMoney", "description": "The member's override, or null."},
                "effective_limit_usd": {"$ref": "#/components/schemas/NullableMoney", "description": "The override, else the team's default, else null."},
                "enforcement": r("Enforcement"),
                "joined_at": r("DateTime"),
            }),
        ),
        "MemberPatch": object(&[], json!({
            "role": {"type": "string", "enum": ["admin", "member"]},
            "monthly_limit_usd": r("NullableMoneyInput"),
        })),
        "MemberRemoved": object(&["user_id", "removed"], json!({
            "user_id": {"type": "string"},
            "removed": {"type": "boolean", "const": true},
        })),
    })
}

fn invitation_schemas() -> Value {
    let invitation = json!({
        "id": {"type": "string"},
        "email": {"type": "string"},
        "role": r("Role"),
        "status": {"type": "string", "enum": ["pending", "accepted", "expired", "revoked"]},
        "expires_at": r("DateTime"),
        "created_at": r("DateTime"),
        "created_by": {"type": "string", "description": "A user id, or `operator`."},
        "accepted_at": r("NullableDateTime"),
        "accepted_by": {"type": ["string", "null"]},
    });
    let invitation_required = [
        "id",
        "email",
        "role",
        "status",
        "expires_at",
        "created_at",
        "created_by",
        "accepted_at",
        "accepted_by",
    ];
    json!({
        "InvitationCreate": object(&["email"], json!({
            "email": {"type": "string", "format": "email"},
            "role": {"type": ["string", "null"], "enum": ["admin", "member", null], "description": "Default member."},
            "expires_in_hours": {"type": ["integer", "null"], "minimum": 1, "maximum": 720, "description": "Default 168 (7 days)."},
        })),
        "Invitation": object(&invitation_required, invitation),
        "CreatedInvitation": {
            "allOf": [r("Invitation")],
            "required": ["token", "url"],
            "properties": {
                "token": {"type": "string", "description": "The invitation's token (`tgi_…`), shown once."},
                "url": {"type": "string", "description": "The page the invitee opens."},
                "email_status": {"type": "string", "enum": ["queued", "capped", "not_queued"], "description": "With email on: the invitation's mail is in the outbox (`queued`), over the team's hourly cap and not sent (`capped`), or could not be written (`not_queued`). Absent with email off."},
            },
        },
        "InvitationPreview": object(&["team", "role", "email", "status", "expires_at"], json!({
            "team": r("TeamRef"),
            "role": r("Role"),
            "email": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "accepted", "expired", "revoked"]},
            "expires_at": r("DateTime"),
        })),
        "InvitationAccepted": object(&["team", "role"], json!({
            "team": r("TeamRef"),
            "role": r("Role"),
        })),
        "InviteLinkRequest": object(&["enabled"], json!({
            "enabled": {"type": "boolean", "description": "true issues a fresh link (the previous one stops working)."},
        })),
        "InviteLink": object(&["enabled"], json!({
            "enabled": {"type": "boolean"},
            "token": {"type": "string", "description": "When enabled: the link's token (`tgl_…`)."},
            "url": {"type": "string", "description": "When enabled: the page the link opens."},
        })),
        "JoinLinkPreview": object(&["team"], json!({"team": r("TeamRef")})),
        "JoinRequest": object(&["id", "team_id", "user_id", "email", "status", "created_at", "decided_at"], json!({
            "id": {"type": "string"},
            "team_id": {"type": "string"},
            "user_id": {"type": "string"},
            "email": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "approved", "denied", "closed"]},
            "created_at": r("DateTime"),
            "decided_at": r("NullableDateTime"),
        })),
    })
}

fn report_schemas() -> Value {
    let mut counts = Map::new();
    counts.insert(
        "requests".into(),
        json!({"type": "integer", "description": "Requests forwarded upstream (refusals are not counted)."}),
    );
    let tokens = [
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
    ];
    for name in tokens {
        counts.insert(name.into(), json!({"type": "integer"}));
    }
    counts.insert("cost_usd".into(), r("Money"));
    let parts = crate::store::teams::UsageParts::default().columns();
    for (name, _) in parts {
        counts.insert(
            name.into(),
            json!({"type": "integer", "description": "A part of the cost, for explaining it."}),
        );
    }
    let mut required = vec!["requests", "cost_usd"];
    required.extend(tokens);
    required.extend(parts.iter().map(|(name, _)| *name));
    let totals = object(&required, Value::Object(counts.clone()));
    let mut group = counts;
    group.insert(
        "key".into(),
        json!({"type": "string", "description": "The user id, model name, date or tag value."}),
    );
    group.insert(
        "label".into(),
        json!({"type": "string", "description": "The email, model, date or tag value (`(none)` for rows without the tag)."}),
    );
    group.insert(
        "split".into(),
        json!({"type": "array", "items": r("UsageSplit"), "description": "With split_by: the day's parts."}),
    );
    required.extend(["key", "label"]);
    let group = object(&required, Value::Object(group));
    json!({
        "UsageTotals": totals,
        "UsageGroup": group,
        "UsageSplit": object(&["key", "label", "requests", "cost_usd"], json!({
            "key": {"type": "string"},
            "label": {"type": "string"},
            "requests": {"type": "integer"},
            "cost_usd": r("Money"),
        })),
        "UsageReport": object(&["from", "to", "group_by", "total", "groups"], json!({
            "from": r("DateTime"),
            "to": {"$ref": "#/components/schemas/DateTime", "description": "Exclusive."},
            "group_by": r("GroupBy"),
            "total": r("UsageTotals"),
            "groups": {"type": "array", "items": r("UsageGroup")},
        })),
        "PayerGroup": {
            "allOf": [r("UsageGroup")],
            "required": ["team_id"],
            "properties": {"team_id": {"type": ["string", "null"], "description": "null for personal usage."}},
        },
        "MyUsage": object(&["from", "to", "balance_usd", "total", "by_day", "by_model", "by_payer"], json!({
            "from": r("DateTime"),
            "to": r("DateTime"),
            "balance_usd": r("Money"),
            "total": r("UsageGroup"),
            "by_day": {"type": "array", "items": r("UsageGroup")},
            "by_model": {"type": "array", "items": r("UsageGroup")},
            "by_payer": {"type": "array", "items": r("PayerGroup")},
        })),
        "AuditEntry": object(&["id", "actor", "action", "target", "before", "after", "at"], json!({
            "id": {"type": "string"},
            "actor": {"type": "string", "description": "A user id, or `operator`."},
            "action": {"type": "string", "examples": ["team.update", "member.update", "invitation.create"]},
            "target": {"type": ["string", "null"]},
            "before": {"description": "The state before (any JSON, or null)."},
            "after": {"description": "The state after (any JSON, or null)."},
            "at": r("DateTime"),
        })),
        "ReportScheduleRequest": {
            "type": ["object", "null"],
            "description": "null stops the schedule.",
            "required": ["cadence", "webhook_id"],
            "properties": {
                "cadence": {"type": "string", "enum": ["weekly", "monthly"]},
                "group_by": {"$ref": "#/components/schemas/GroupBy", "description": "Default member."},
                "webhook_id": {"type": "string", "description": "One of the team's webhooks."},
            },
        },
        "ReportSchedule": object(&["cadence", "group_by", "webhook_id", "next_report_at"], json!({
            "cadence": {"type": "string", "enum": ["weekly", "monthly"]},
            "group_by": r("GroupBy"),
            "webhook_id": {"type": "string"},
            "next_report_at": r("DateTime"),
        })),
        "ReportSent": object(&["event_id"], json!({
            "event_id": {"type": ["string", "null"], "description": "The recorded `report.scheduled` event."},
        })),
    })
}

fn webhook_schemas() -> Value {
    let webhook = json!({
        "id": {"type": "string"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": r("EventType")},
        "created_at": r("DateTime"),
    });
    json!({
        "WebhookCreate": object(&["url", "events"], json!({
            "url": {"type": "string", "maxLength": 2048, "description": "http:// or https://."},
            "events": {"type": "array", "items": r("EventType"), "minItems": 1},
        })),
        "Webhook": object(&["id", "url", "events", "created_at"], webhook),
        "OutboxMail": object(&["id", "team_id", "kind", "to", "status", "attempts", "last_error", "created_at", "next_attempt_at", "sent_at"], json!({
            "id": {"type": "string"},
            "team_id": {"type": ["string", "null"]},
            "kind": {"type": "string", "enum": ["invitation", "report", "limit.threshold", "limit.blocked"]},
            "to": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "sent", "failed", "capped"]},
            "attempts": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "created_at": r("DateTime"),
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "sent_at": {"type": ["string", "null"], "format": "date-time"},
        })),
        "Outbox": object(&["email", "data"], json!({
            "email": {"type": "boolean", "description": "Whether email is on (`[email] smtp_url`)."},
            "data": {"type": "array", "items": r("OutboxMail")},
        })),
        "CreatedWebhook": {
            "allOf": [r("Webhook")],
            "required": ["secret"],
            "properties": {"secret": {"type": "string", "description": "The signing secret (`whsec_…`), shown once."}},
        },
        "Delivery": object(&["id", "event_id", "attempt", "at", "status", "delivered", "error", "duration_ms"], json!({
            "id": {"type": "string"},
            "event_id": {"type": "string"},
            "attempt": {"type": "integer"},
            "at": r("DateTime"),
            "status": {"type": ["integer", "null"], "description": "The receiver's HTTP status, or null when none came."},
            "delivered": {"type": "boolean"},
            "error": {"type": ["string", "null"]},
            "duration_ms": {"type": "integer"},
        })),
    })
}

fn model_request_schemas() -> Value {
    let max = |description: &str| json!({"type": ["integer", "null"], "description": description});
    json!({
        "ChatCompletionRequest": object(&["model", "messages"], json!({
            "model": {"type": "string", "description": "A model name this gateway knows (GET /v1/models)."},
            "messages": {"type": "array", "items": {"type": "object"}},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {"description": "Streams: `include_usage: true` is added when absent (the usage chunk is then not shown)."},
            "max_tokens": max("Lowers the hold."),
            "max_completion_tokens": max("Lowers the hold."),
            "n": {"type": ["integer", "null"]},
        })),
        "CompletionRequest": object(&["model", "prompt"], json!({
            "model": {"type": "string"},
            "prompt": {"description": "A string, a list of strings or token lists."},
            "stream": {"type": ["boolean", "null"]},
            "max_tokens": max("Lowers the hold."),
            "n": {"type": ["integer", "null"]},
            "best_of": {"type": ["integer", "null"]},
        })),
        "EmbeddingRequest": object(&["model", "input"], json!({
            "model": {"type": "string"},
            "input": {"description": "A string, a list of strings or token lists."},
        })),
        "ResponseRequest": object(&["model"], json!({
            "model": {"type": "string"},
            "input": {"description": "A string or a list of input items."},
            "stream": {"type": ["boolean", "null"]},
            "max_output_tokens": max("Lowers the hold."),
            "background": {"type": ["boolean", "null"], "description": "`true` is refused: its usage never passes through the gateway."},
        })),
        "MessageRequest": object(&["model", "messages", "max_tokens"], json!({
            "model": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "object"}},
            "max_tokens": {"type": "integer"},
            "stream": {"type": ["boolean", "null"]},
        })),
    })
}

fn model_answer_schemas() -> Value {
    let count = json!({"type": ["integer", "null"]});
    json!({
        "OpenAiUsage": object(&[], json!({
            "prompt_tokens": count,
            "completion_tokens": count,
            "total_tokens": count,
            "prompt_tokens_details": {"type": ["object", "null"]},
            "completion_tokens_details": {"type": ["object", "null"]},
        })),
        "ChatCompletion": object(&[], json!({
            "id": {"type": "string"},
            "object": {"type": "string"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"anyOf": [r("OpenAiUsage"), {"type": "null"}]},
            "service_tier": {"type": ["string", "null"]},
            "system_fingerprint": {"type": ["string", "null"]},
        })),
        "Completion": object(&[], json!({
            "id": {"type": "string"},
            "object": {"type": "string"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"anyOf": [r("OpenAiUsage"), {"type": "null"}]},
        })),
        "EmbeddingList": object(&[], json!({
            "object": {"type": "string"},
            "data": {"type": "array", "items": object(&[], json!({
                "object": {"type": "string"},
                "index": {"type": "integer"},
                "embedding": {"type": ["array", "string"], "description": "Floats, or base64 text."},
            }))},
            "model": {"type": "string"},
            "usage": {"anyOf": [r("OpenAiUsage"), {"type": "null"}]},
        })),
        "ResponseObject": object(&[], json!({
            "id": {"type": "string"},
            "object": {"type": "string"},
            "status": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        })),
        "Message": object(&[], json!({
            "id": {"type": "string"},
            "type": {"type": "string"},
            "role": {"type": "string"},
            "model": {"type": "string"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]},
            "usage": {"type": ["object", "null"]},
        })),
        "Model": object(&["id", "object", "created", "owned_by"], json!({
            "id": {"type": "string"},
            "object": {"type": "string", "const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string", "description": "The provider's name in the config."},
        })),
        "ModelList": object(&["object", "data"], json!({
            "object": {"type": "string", "const": "list"},
            "data": {"type": "array", "items": r("Model")},
        })),
    })
}

fn ops_schemas() -> Value {
    let up = json!({"type": "string", "enum": ["ok", "unreachable"]});
    json!({
        "Health": object(&["status"], json!({"status": {"type": "string", "const": "ok"}})),
        "Readiness": object(&["status", "database", "counters", "ledger"], json!({
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "database": up,
            "counters": object(&["backend", "status", "when_unreachable"], json!({
                "backend": {"type": "string"},
                "status": up,
                "when_unreachable": {"type": ["string", "null"], "enum": ["local", "refuse", null], "description": "Redis's outage policy; null for in-process counters."},
            })),
            "ledger": object(&["queue_depth", "mode", "spool_rows", "set_aside_rows", "refusing"], json!({
                "queue_depth": {"type": "integer"},
                "mode": {"type": "string", "enum": ["direct", "spooling"]},
                "spool_rows": {"type": "integer"},
                "set_aside_rows": {"type": "integer", "description": "Rows the database rejected, set aside by this process."},
                "refusing": {"type": "boolean"},
            })),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_crate_version() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc["paths"]["/api/teams/{team_id}"]["patch"].is_object());
        assert_eq!(
            doc["paths"]["/api/teams/{team_id}"]["parameters"][0]["name"],
            "team_id"
        );
    }

    #[test]
    fn head_has_the_headers_and_no_body() {
        use http_body::Body as _;
        let get = serve(&Method::GET);
        let head = serve(&Method::HEAD);
        assert_eq!(get.headers()["content-type"], "application/json");
        assert_eq!(
            get.headers()["content-length"],
            head.headers()["content-length"]
        );
        assert!(head.body().is_end_stream());
        assert!(!get.body().is_end_stream());
    }
}
