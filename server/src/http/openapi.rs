//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand. A test checks it
//! against the router's source in both directions, so a route cannot be added or dropped
//! without its documentation.

use serde_json::{Value, json};

/// One documented operation: (method, path, summary, who may call it, request body media
/// type, success status).
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
);

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    ("get", "/healthz", "Liveness check", "anyone", None, 200),
    ("get", "/metrics", "Prometheus metrics", "viewer", None, 200),
    ("get", "/openapi.json", "This document", "anyone", None, 200),
    (
        "get",
        "/admin",
        "Privacy-budget dashboard (HTML). It shows nothing until a bearer token is entered, then reads the /v1 API with it",
        "anyone",
        None,
        200,
    ),
    (
        "get",
        "/admin/app.js",
        "Dashboard script",
        "anyone",
        None,
        200,
    ),
    (
        "get",
        "/admin/app.css",
        "Dashboard style sheet",
        "anyone",
        None,
        200,
    ),
    (
        "get",
        "/v1/federations",
        "List federations",
        "viewer",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations",
        "Create a federation: multipart with parts `federation` (JSON: name, model_spec, config) and `weights` (safetensors, f32)",
        "admin",
        Some("multipart/form-data"),
        201,
    ),
    (
        "get",
        "/v1/federations/{fed}",
        "One federation",
        "viewer",
        None,
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/clients",
        "List clients",
        "viewer",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations/{fed}/clients",
        "Invite a client; the answer holds its one-time enrolment token",
        "admin",
        Some("application/json"),
        201,
    ),
    (
        "post",
        "/v1/federations/{fed}/clients/{client}/revoke",
        "Revoke a client for good. Optional JSON body {\"reason\": text}; written to the audit log",
        "admin",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations/{fed}/clients/{client}/budget",
        "Set or raise a client's record-level epsilon budget: JSON {\"set_epsilon\": x} or {\"raise_epsilon_by\": x}, with \"reason\". Audited (who, when, old and new, reason). A budget below the spend makes the client exhausted; spent epsilon never changes; delta cannot be changed",
        "admin",
        Some("application/json"),
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/audit",
        "Audit log of budget changes and revocations, oldest first; ?client=NAME keeps one client's",
        "viewer",
        None,
        200,
    ),
    (
        "get",
        "/v1/me/budget",
        "The calling client's own budget: spent and budget (epsilon, delta), rounds, status and epsilon after each round",
        "client certificate",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations/{fed}/enrol",
        "Exchange a one-time token and a CSR for a client certificate",
        "enrolment token",
        Some("application/json"),
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/rounds",
        "List rounds",
        "viewer",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations/{fed}/rounds",
        "Open a round now",
        "admin",
        None,
        201,
    ),
    (
        "get",
        "/v1/federations/{fed}/rounds/{round}",
        "One round",
        "viewer",
        None,
        200,
    ),
    (
        "put",
        "/v1/federations/{fed}/rounds/{round}/update",
        "Upload an update (vector frame, f32) to the open round; ?num_examples=N weights it. 409 if late, duplicate or replayed",
        "client certificate",
        Some("application/vnd.cohort.vector"),
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/task",
        "Poll for a task (train, evaluate, wait or ineligible); `wait` answers carry Retry-After",
        "client certificate",
        None,
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/evaluations",
        "Evaluations, oldest first, each with its model version, the sites asked and not asked (with why), the noise, and the report once closed",
        "viewer",
        None,
        200,
    ),
    (
        "post",
        "/v1/federations/{fed}/evaluations",
        "Evaluate a model version now: `{}` for the latest or `{\"model_version\": V}`; asked sites are charged before they learn of it",
        "admin",
        Some("application/json"),
        201,
    ),
    (
        "post",
        "/v1/federations/{fed}/evaluations/{evaluation}/statistics",
        "A site's released statistics (`values`: the noised integer vector, `charged`: what its ledger charged); the wrong shape or impossible counts are refused and change nothing",
        "client certificate",
        Some("application/json"),
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/models/{version}",
        "Download model weights (safetensors) with an ETag; `{version}` is a number or `latest`",
        "viewer or client certificate",
        None,
        200,
    ),
    (
        "get",
        "/v1/federations/{fed}/budgets",
        "Privacy spend of the federation (client-level) and of each client (record-level): budget, spent, rounds, status (eligible, exhausted, revoked, pending), epsilon after one more round, last seen, epsilon after each round",
        "viewer",
        None,
        200,
    ),
];

fn security(who: &str) -> Value {
    match who {
        "anyone" | "enrolment token" => json!([]),
        "client certificate" => json!([{ "mutualTLS": [] }]),
        "viewer or client certificate" => json!([{ "bearer": ["viewer"] }, { "mutualTLS": [] }]),
        role => json!([{ "bearer": [role] }]),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, who, body, status) in
        OPERATIONS.iter().chain(super::secagg::OPERATIONS)
    {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": summary,
            "description": format!("Caller: {who}."),
            "parameters": params,
            "security": security(who),
            "responses": {
                status.to_string(): { "description": "Success" },
                "4XX": { "description": "A problem document saying what is wrong", "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } },
            },
        });
        if let Some(media) = body {
            op["requestBody"] = json!({ "required": true, "content": { *media: {} } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cohort aggregation server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Federated learning with per-client privacy budgets. Errors are RFC 9457 problem documents; update uploads use the vector frame documented in protocol/README.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "cohort1 token carrying role admin or viewer (cohort pki issue-token)" },
                "mutualTLS": { "type": "mutualTLS", "description": "client certificate issued by the federation CA at enrolment" }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": { "type": "string", "description": "urn:cohort:problem:<slug>" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "instance": { "type": "string" }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route("path", method(handler)...)` in the router source, as (method, path).
    fn routes_in_source() -> Vec<(String, String)> {
        let src = include_str!("mod.rs");
        let mut out = Vec::new();
        for chunk in src.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, tail)) = rest.split_once('"') else {
                continue;
            };
            // The chunk runs to the next `.route(`, so it holds this route's method chain.
            let call = tail;
            for m in ["get", "post", "put", "delete", "patch"] {
                // `get(module::handler)` or `.post(module::handler)`, from any handler module.
                let pattern = format!("{m}(");
                let found = call.match_indices(&pattern).any(|(i, _)| {
                    let before = call[..i].chars().next_back();
                    let after = &call[i + pattern.len()..];
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && after.split_once("::").is_some_and(|(module, _)| {
                            !module.is_empty()
                                && module.chars().all(|c| c.is_alphanumeric() || c == '_')
                        })
                });
                if found {
                    out.push((m.to_owned(), path.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let routes = routes_in_source();
        assert!(routes.len() >= 15, "parsed only {routes:?}");
        let documented: Vec<(String, String)> = OPERATIONS
            .iter()
            .chain(super::super::secagg::OPERATIONS)
            .map(|(m, p, ..)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        for r in &routes {
            assert!(
                documented.contains(r),
                "route {r:?} is not in the OpenAPI document"
            );
        }
        for d in &documented {
            assert!(routes.contains(d), "documented {d:?} has no route");
        }
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/federations"]["post"]["requestBody"].is_object());
    }
}
