//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Request and response bodies are the JSON schemas utoipa derives from the very types the
//! handlers (de)serialise ([`Content::Json`] names the type, not a hand-written schema), and
//! path parameters carry the id rules the extractors enforce, so a schema-driven fuzzer
//! (`scripts/schemathesis.sh`) can tell valid requests from invalid ones. A test checks the
//! table against the router in both directions.

use cohort_protocol::budgets::{AuditEntry, BudgetChangeRequest, BudgetChanged, MyBudget};
use cohort_protocol::evaluation::{
    EvaluationView, OpenEvaluation, StatisticsReceipt, StatisticsUpload,
};
use cohort_protocol::messages::{
    BudgetsView, ClientCreated, ClientView, CreateClient, EnrolRequest, EnrolResponse, RoundView,
    TaskPoll, UploadReceipt,
};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use super::extract::{SAFETENSORS_MEDIA_TYPE, VECTOR_MEDIA_TYPE};
use super::handlers::{FederationView, Health};
use Caller::{Admin, Anyone, ClientCertificate, EnrolmentToken, Viewer, ViewerOrClient};
use Method::{Get, Post, Put};

/// Component schemas collected while the document is built.
type Components = Vec<(String, RefOr<Schema>)>;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Method {
    /// The lower-case name OpenAPI keys operations by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anyone,
    /// The one-time enrolment token in the body.
    EnrolmentToken,
    /// A person's bearer token with the viewer (or admin) role.
    Viewer,
    /// A person's bearer token with the admin role.
    Admin,
    /// An enrolled client's certificate.
    ClientCertificate,
    /// Either of the last two kinds.
    ViewerOrClient,
}

impl Caller {
    fn words(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::EnrolmentToken => "enrolment token",
            Self::Viewer => "viewer",
            Self::Admin => "admin",
            Self::ClientCertificate => "client certificate",
            Self::ViewerOrClient => "viewer or client certificate",
        }
    }

    fn security(self) -> Value {
        match self {
            Self::Anyone | Self::EnrolmentToken => json!([]),
            Self::ClientCertificate => json!([{ "mutualTLS": [] }]),
            Self::ViewerOrClient => json!([{ "bearer": ["viewer"] }, { "mutualTLS": [] }]),
            Self::Viewer => json!([{ "bearer": ["viewer"] }]),
            Self::Admin => json!([{ "bearer": ["admin"] }]),
        }
    }
}

/// A request or response body.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// `application/json` of a type's derived schema (use [`json`]).
    Json(fn(&mut Components) -> Value),
    /// Bytes of these media types (the first is the one to send).
    Binary(&'static [&'static str]),
    /// Text of one media type.
    Text(&'static str),
    /// `POST /v1/federations`: a JSON part and a safetensors part.
    FederationUpload,
}

/// [`Content::Json`] of `T`'s derived schema.
pub fn json<T: ToSchema>(components: &mut Components) -> Value {
    reference::<T>(components)
}

/// [`Content::Json`] of a SecAgg stage poll answering `T`: utoipa's schema of a generic type
/// refers to `T` without collecting it.
pub fn stage_poll<T: ToSchema>(components: &mut Components) -> Value {
    reference::<T>(components);
    reference::<cohort_protocol::secagg::StagePoll<T>>(components)
}

/// [`Content::Json`] of an array of `T`.
pub fn array<T: ToSchema>(components: &mut Components) -> Value {
    json!({ "type": "array", "items": reference::<T>(components) })
}

fn any_object(_: &mut Components) -> Value {
    json!({ "type": "object" })
}

fn reference<T: ToSchema>(components: &mut Components) -> Value {
    // Generic types are named `StagePoll<Directory>`; component keys allow `[A-Za-z0-9._-]`.
    let name: String = T::name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !components.iter().any(|(n, _)| *n == name) {
        components.push((name.clone(), T::schema()));
        T::schemas(components);
    }
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An optional query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its schema.
    pub schema: fn(&mut Components) -> Value,
}

fn non_negative_integer(_: &mut Components) -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": cohort_protocol::schema::MAX_ID })
}

fn client_name(c: &mut Components) -> Value {
    reference::<cohort_protocol::ClientId>(c)
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Method.
    pub method: Method,
    /// Path, with `{fed}`, `{client}`, `{round}` and `{version}` parameters.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Who may call it.
    pub caller: Caller,
    /// Its query parameters.
    pub query: &'static [Query],
    /// Its body, and whether it may be left out.
    pub request: Option<(Content, Required)>,
    /// The success status.
    pub status: u16,
    /// The success body (`None`: empty).
    pub response: Option<Content>,
}

/// Whether a request body must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// It must.
    Yes,
    /// It may be left out (an empty body).
    No,
}

/// An operation answering `response` with 200 and taking no body or query.
pub const fn op(
    method: Method,
    path: &'static str,
    summary: &'static str,
    caller: Caller,
    response: Content,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        caller,
        query: &[],
        request: None,
        status: 200,
        response: Some(response),
    }
}

/// `o` with a required body, answering `status`.
pub const fn with_body(mut o: Operation, body: Content, status: u16) -> Operation {
    o.request = Some((body, Required::Yes));
    o.status = status;
    o
}

/// Every operation of the API but the SecAgg stages ([`super::secagg::OPERATIONS`]).
pub const OPERATIONS: &[Operation] = &[
    op(
        Get,
        "/healthz",
        "Liveness check",
        Anyone,
        Content::Json(json::<Health>),
    ),
    op(
        Get,
        "/metrics",
        "Prometheus metrics",
        Viewer,
        Content::Text("text/plain"),
    ),
    op(
        Get,
        "/openapi.json",
        "This document",
        Anyone,
        Content::Json(any_object),
    ),
    op(
        Get,
        "/admin",
        "Privacy-budget dashboard (HTML). It shows nothing until a bearer token is entered, then reads the /v1 API with it",
        Anyone,
        Content::Text("text/html"),
    ),
    op(
        Get,
        "/admin/app.js",
        "Dashboard script",
        Anyone,
        Content::Text("text/javascript"),
    ),
    op(
        Get,
        "/admin/app.css",
        "Dashboard style sheet",
        Anyone,
        Content::Text("text/css"),
    ),
    op(
        Get,
        "/v1/federations",
        "List federations",
        Viewer,
        Content::Json(array::<FederationView>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations",
            "Create a federation: multipart with parts `federation` (JSON: name, model_spec, config) and `weights` (safetensors, f32)",
            Admin,
            Content::Json(json::<FederationView>),
        ),
        Content::FederationUpload,
        201,
    ),
    op(
        Get,
        "/v1/federations/{fed}",
        "One federation",
        Viewer,
        Content::Json(json::<FederationView>),
    ),
    op(
        Get,
        "/v1/federations/{fed}/clients",
        "List clients",
        Viewer,
        Content::Json(array::<ClientView>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/clients",
            "Invite a client; the answer holds its one-time enrolment token",
            Admin,
            Content::Json(json::<ClientCreated>),
        ),
        Content::Json(json::<CreateClient>),
        201,
    ),
    Operation {
        request: Some((
            Content::Json(json::<cohort_protocol::budgets::RevokeRequest>),
            Required::No,
        )),
        ..op(
            Post,
            "/v1/federations/{fed}/clients/{client}/revoke",
            "Revoke a client for good. An optional reason is written to the audit log",
            Admin,
            Content::Json(json::<ClientView>),
        )
    },
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/clients/{client}/budget",
            "Set or raise a client's record-level epsilon budget, with a reason. Audited (who, when, old and new, reason). A budget below the spend makes the client exhausted; spent epsilon never changes; delta cannot be changed",
            Admin,
            Content::Json(json::<BudgetChanged>),
        ),
        Content::Json(json::<BudgetChangeRequest>),
        200,
    ),
    Operation {
        query: &[Query {
            name: "client",
            description: "Only this client's lines",
            schema: client_name,
        }],
        ..op(
            Get,
            "/v1/federations/{fed}/audit",
            "Audit log of budget changes and revocations, oldest first",
            Viewer,
            Content::Json(array::<AuditEntry>),
        )
    },
    op(
        Get,
        "/v1/me/budget",
        "The calling client's own budget: spent and budget (epsilon, delta), rounds, status and epsilon after each round",
        ClientCertificate,
        Content::Json(json::<MyBudget>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/enrol",
            "Exchange a one-time token and a CSR for a client certificate",
            EnrolmentToken,
            Content::Json(json::<EnrolResponse>),
        ),
        Content::Json(json::<EnrolRequest>),
        200,
    ),
    op(
        Get,
        "/v1/federations/{fed}/rounds",
        "List rounds",
        Viewer,
        Content::Json(array::<RoundView>),
    ),
    Operation {
        status: 201,
        ..op(
            Post,
            "/v1/federations/{fed}/rounds",
            "Open a round now",
            Admin,
            Content::Json(json::<RoundView>),
        )
    },
    op(
        Get,
        "/v1/federations/{fed}/rounds/{round}",
        "One round",
        Viewer,
        Content::Json(json::<RoundView>),
    ),
    Operation {
        query: &[Query {
            name: "num_examples",
            description: "Records the update was trained on (FedAvg's weight)",
            schema: non_negative_integer,
        }],
        ..with_body(
            op(
                Put,
                "/v1/federations/{fed}/rounds/{round}/update",
                "Upload an update (vector frame, f32) to the open round. 409 if late, duplicate or replayed",
                ClientCertificate,
                Content::Json(json::<UploadReceipt>),
            ),
            Content::Binary(&[VECTOR_MEDIA_TYPE, "application/octet-stream"]),
            200,
        )
    },
    Operation {
        query: &[Query {
            name: "sample_count",
            description: "The client's current number of training records",
            schema: non_negative_integer,
        }],
        ..op(
            Get,
            "/v1/federations/{fed}/task",
            "Poll for a task (train, evaluate, wait or ineligible); `wait` answers carry Retry-After",
            ClientCertificate,
            Content::Json(json::<TaskPoll>),
        )
    },
    op(
        Get,
        "/v1/federations/{fed}/evaluations",
        "Evaluations, oldest first, each with its model version, the sites asked and not asked (with why), the noise, and the report once closed",
        Viewer,
        Content::Json(array::<EvaluationView>),
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/evaluations",
            "Evaluate a model version now: `{}` for the latest or `{\"model_version\": V}`; asked sites are charged before they learn of it",
            Admin,
            Content::Json(json::<EvaluationView>),
        ),
        Content::Json(json::<OpenEvaluation>),
        201,
    ),
    with_body(
        op(
            Post,
            "/v1/federations/{fed}/evaluations/{evaluation}/statistics",
            "A site's released statistics (`values`: the noised integer vector, `charged`: what its ledger charged); the wrong shape or impossible counts are refused and change nothing",
            ClientCertificate,
            Content::Json(json::<StatisticsReceipt>),
        ),
        Content::Json(json::<StatisticsUpload>),
        200,
    ),
    op(
        Get,
        "/v1/federations/{fed}/models/{version}",
        "Download model weights (safetensors) with an ETag; `{version}` is a number or `latest`",
        ViewerOrClient,
        Content::Binary(&[SAFETENSORS_MEDIA_TYPE]),
    ),
    op(
        Get,
        "/v1/federations/{fed}/budgets",
        "Privacy spend of the federation (client-level) and of each client (record-level): budget, spent, rounds, status (eligible, exhausted, revoked, pending), epsilon after one more round, last seen, epsilon after each round",
        Viewer,
        Content::Json(json::<BudgetsView>),
    ),
];

/// The schema of a path parameter, by name.
fn path_parameter(name: &str, components: &mut Components) -> Value {
    match name {
        "fed" => reference::<cohort_protocol::FederationId>(components),
        "client" => reference::<cohort_protocol::ClientId>(components),
        "round" => reference::<cohort_protocol::RoundId>(components),
        // An evaluation's number, as the server counts them per federation.
        "evaluation" => json!({
            "type": "string",
            "pattern": "^(0|[1-9][0-9]{0,17})$"
        }),
        // A model version: 0 (the initial weights) up to 2^63 − 1, or `latest`.
        "version" => json!({
            "type": "string",
            "pattern": "^(latest|0|[1-9][0-9]{0,17})$"
        }),
        _ => json!({ "type": "string" }),
    }
}

fn content(c: Content, components: &mut Components) -> Value {
    match c {
        Content::Json(schema) => json!({ "application/json": { "schema": schema(components) } }),
        Content::Binary(types) => {
            let mut out = serde_json::Map::new();
            for t in types {
                out.insert(
                    (*t).to_owned(),
                    json!({ "schema": { "type": "string", "format": "binary" } }),
                );
            }
            Value::Object(out)
        }
        Content::Text(media) => json!({ media: { "schema": { "type": "string" } } }),
        Content::FederationUpload => json!({
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["federation", "weights"],
                    "properties": {
                        "federation": reference::<crate::service::CreateFederation>(components),
                        "weights": { "type": "string", "format": "binary", "description": "safetensors with f32 tensors" },
                    },
                },
                "encoding": {
                    "federation": { "contentType": "application/json" },
                    "weights": { "contentType": "application/octet-stream" },
                },
            }
        }),
    }
}

fn operation(o: &Operation, components: &mut Components) -> Value {
    let mut params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": path_parameter(name, components),
            })
        })
        .collect();
    for q in o.query {
        params.push(json!({
            "name": q.name,
            "in": "query",
            "required": false,
            "description": q.description,
            "schema": (q.schema)(components),
        }));
    }
    let mut success = json!({ "description": "Success" });
    if let Some(body) = o.response {
        success["content"] = content(body, components);
    }
    let mut op = json!({
        "summary": o.summary,
        "description": format!("Caller: {}.", o.caller.words()),
        "parameters": params,
        "security": o.caller.security(),
        "responses": {
            o.status.to_string(): success,
            "4XX": {
                "description": "A problem document saying what is wrong",
                "content": { cohort_protocol::problem::CONTENT_TYPE: { "schema": reference::<cohort_protocol::Problem>(components) } },
            },
        },
    });
    if let Some((body, required)) = o.request {
        op["requestBody"] = json!({
            "required": required == Required::Yes,
            "content": content(body, components),
        });
    }
    op
}

/// The document. Rendering a derived schema cannot fail in practice (string keys only); if
/// it ever did, the caller answers 500 rather than serve a document with a hole.
pub fn document() -> Result<Value, serde_json::Error> {
    let mut components = Components::new();
    let mut paths = serde_json::Map::new();
    for o in OPERATIONS.iter().chain(super::secagg::OPERATIONS) {
        let entry = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        entry[o.method.as_str()] = operation(o, &mut components);
    }
    let schemas = components
        .into_iter()
        .map(|(name, schema)| Ok((name, serde_json::to_value(schema)?)))
        .collect::<Result<serde_json::Map<String, Value>, serde_json::Error>>()?;
    Ok(json!({
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
            "schemas": schemas,
        }
    }))
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
