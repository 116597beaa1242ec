//! The operator's side of the demo, over the server's documented HTTPS API with an admin
//! token: create the federation, invite hospitals, open rounds, read rounds, models and
//! budgets. The same calls an admin makes with curl or the dashboard.

use cohort_client::participant::https::https_client;
use cohort_protocol::messages::{BudgetsView, ClientCreated, RoundView};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An admin session with one server.
#[derive(Debug, Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// The innermost cause of an error ("connection refused", "certificate not trusted").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl AdminApi {
    /// A session trusting `ca_pem` and presenting `token` (an admin bearer token).
    pub fn new(url: &str, ca_pem: &str, token: &str) -> Result<Self, String> {
        Ok(Self {
            http: https_client(ca_pem, None)?,
            url: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, String> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("{what}: cannot reach {}: {}", self.url, root_cause(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let detail = resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(format!(
            "{what}: the server answered {}: {detail}",
            status.as_u16()
        ))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, String> {
        self.send(req, what)
            .await?
            .json::<T>()
            .await
            .map_err(|e| format!("{what}: unexpected answer: {e}"))
    }

    /// `POST /v1/federations` (multipart: the federation as JSON, the initial weights).
    pub async fn create_federation(
        &self,
        name: &str,
        model_spec: Value,
        config: Value,
        weights: Vec<u8>,
    ) -> Result<(), String> {
        let spec = json!({ "name": name, "model_spec": model_spec, "config": config });
        let form = reqwest::multipart::Form::new()
            .part(
                "federation",
                reqwest::multipart::Part::text(spec.to_string())
                    .mime_str("application/json")
                    .map_err(|e| e.to_string())?,
            )
            .part(
                "weights",
                reqwest::multipart::Part::bytes(weights)
                    .mime_str("application/vnd.safetensors")
                    .map_err(|e| e.to_string())?,
            );
        let req = self
            .http
            .post(format!("{}/v1/federations", self.url))
            .multipart(form);
        self.send(req, "creating the federation").await.map(drop)
    }

    /// `POST /v1/federations/{fed}/clients`: invites a client, with its own budget if given;
    /// returns its one-time enrolment token.
    pub async fn invite(
        &self,
        fed: &str,
        name: &str,
        budget: Option<(f64, f64)>,
    ) -> Result<String, String> {
        let mut body = json!({ "name": name });
        if let Some((epsilon, delta)) = budget {
            body["budget"] = json!({ "epsilon": epsilon, "delta": delta });
        }
        let req = self
            .http
            .post(format!("{}/v1/federations/{fed}/clients", self.url))
            .json(&body);
        let created: ClientCreated = self.json(req, &format!("inviting {name}")).await?;
        Ok(created.enrolment_token)
    }

    /// `POST /v1/federations/{fed}/rounds`: opens the next round now.
    pub async fn open_round(&self, fed: &str) -> Result<RoundView, String> {
        let req = self
            .http
            .post(format!("{}/v1/federations/{fed}/rounds", self.url));
        self.json(req, "opening a round").await
    }

    /// `GET /v1/federations/{fed}/rounds/{round}`.
    pub async fn round(&self, fed: &str, round: u64) -> Result<RoundView, String> {
        let req = self
            .http
            .get(format!("{}/v1/federations/{fed}/rounds/{round}", self.url));
        self.json(req, &format!("reading round {round}")).await
    }

    /// `GET /v1/federations/{fed}/models/latest`: the global model's safetensors.
    pub async fn latest_model(&self, fed: &str) -> Result<Vec<u8>, String> {
        let req = self
            .http
            .get(format!("{}/v1/federations/{fed}/models/latest", self.url));
        let resp = self.send(req, "downloading the global model").await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("downloading the global model: {e}"))
    }

    /// `GET /v1/federations/{fed}/budgets`: every client's record-level spend, from the ledger.
    pub async fn budgets(&self, fed: &str) -> Result<BudgetsView, String> {
        let req = self
            .http
            .get(format!("{}/v1/federations/{fed}/budgets", self.url));
        self.json(req, "reading the budgets").await
    }
}
