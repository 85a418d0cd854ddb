//! Redeeming an Incus trust token without a command line: fleet POSTs it to the server's REST API
//! itself (`POST /1.0/certificates {"type":"client","trust_token":…}`), presenting its client
//! certificate, over TLS to the pinned server certificate only (the token's own fingerprint, which
//! enrolment has just checked the address presents). `incus remote add` then finds the server
//! trusting fleet's certificate and asks for no token. The token never is an argument of any
//! process (`ps` and `/proc/*/cmdline` show arguments to every user of the machine), never goes to
//! a server other than the pinned one, and is never repeated in an error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::tls::pin::{client_config_with_identity, PinVerifier};
use crate::tls::Pin;

/// Whether the server already trusts fleet's certificate; if not, redeems `token` for it.
/// `config_dir` holds fleet's client certificate (`client.crt`, `client.key`).
pub async fn redeem(address: &str, pin: Pin, config_dir: &Path, token: &str) -> Result<Redeemed, String> {
    let crt = tokio::fs::read(config_dir.join("client.crt")).await.map_err(|e| format!("client.crt: {e}"))?;
    let key = tokio::fs::read(config_dir.join("client.key")).await.map_err(|e| format!("client.key: {e}"))?;
    let verifier = PinVerifier::new(pin);
    let tls = client_config_with_identity(verifier.clone(), &crt, &key)?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| e.to_string())?;
    let why = |e: reqwest::Error, v: &Arc<PinVerifier>| match v.mismatch() {
        Some(m) => format!("the server at {address}: {m}"),
        None => chain(&e),
    };
    let info: Value = http
        .get(format!("{address}/1.0"))
        .send()
        .await
        .map_err(|e| why(e, &verifier))?
        .json()
        .await
        .map_err(|e| format!("GET /1.0: {e}"))?;
    if info["metadata"]["auth"] == "trusted" {
        return Ok(Redeemed::AlreadyTrusted);
    }
    let resp = http
        .post(format!("{address}/1.0/certificates"))
        .json(&json!({"type": "client", "trust_token": token}))
        .send()
        .await
        .map_err(|e| why(e, &verifier))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if status.is_success() && body["status_code"] == 200 {
        return Ok(Redeemed::Now);
    }
    // Incus's own words ("Trust token is invalid", …): never the token.
    let said = body["error"].as_str().filter(|s| !s.is_empty()).unwrap_or("no reason given");
    Err(format!("the server refused the trust token ({status}: {})", said.replace(token, "<token>")))
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    why
}

/// What `redeem` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The server trusted fleet's certificate before (a run killed after redeeming the token): the
    /// token was not sent.
    AlreadyTrusted,
    Now,
}
