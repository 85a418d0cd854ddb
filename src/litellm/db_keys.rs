//! The database key backend: LiteLLM's own virtual keys, managed through the
//! running proxy's admin API with the master key (`/key/list` by alias first, so a
//! re-run never mints a second key; `/key/generate`, `/key/update`, `/key/delete`).
//!
//! LiteLLM needs Postgres and Prisma's engines for these endpoints, which cannot be
//! downloaded on the machines this was built on: the client is written against
//! LiteLLM's documented request/response shapes and tested against a local server
//! that checks them, not against a real database.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use super::keys::{hash_key, KeyStore, StoredKey};
use crate::fleetfile::secret::{Secret, SecretRef};

pub struct DatabaseKeyStore {
    base_url: String,
    master: String,
    client: reqwest::Client,
}

impl DatabaseKeyStore {
    /// `master` is the master key's reference (`env:…` / `file:…`), resolved per call: fleet may
    /// mint the key file during the same run.
    pub fn new(base_url: &str, master: &str) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        DatabaseKeyStore { base_url: base_url.trim_end_matches('/').to_string(), master: master.to_string(), client }
    }

    fn master(&self) -> miette::Result<Secret> {
        let r = SecretRef::parse(&self.master, Path::new("/")).map_err(|e| miette!("master key reference: {e}"))?;
        r.resolve().map_err(|e| miette!("cannot read the LiteLLM master key: {e}"))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> miette::Result<Value> {
        let master = self.master()?;
        let mut req = self.client.request(method, format!("{}{path}", self.base_url)).bearer_auth(master.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| miette!("LiteLLM {path}: {}", e.without_url()))?;
        let status = resp.status();
        let text = resp.text().await.into_diagnostic()?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let msg = v
                .pointer("/error/message")
                .or_else(|| v.get("detail"))
                .map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string()))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(miette!("LiteLLM {path} answered {status}: {msg}"));
        }
        serde_json::from_str(&text).map_err(|e| miette!("LiteLLM {path} answered with invalid JSON: {e}"))
    }
}

#[async_trait::async_trait]
impl KeyStore for DatabaseKeyStore {
    async fn find(&self, alias: &str) -> miette::Result<Option<StoredKey>> {
        let path = format!("/key/list?key_alias={}&return_full_object=true&size=100", urlencode(alias));
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| miette!("LiteLLM /key/list: no `keys` in the answer"))?;
        let found: Vec<&Value> =
            keys.iter().filter(|k| k.get("key_alias").and_then(Value::as_str) == Some(alias)).collect();
        if found.len() > 1 {
            return Err(miette!("LiteLLM holds {} keys with alias {alias}; delete the extra ones", found.len()));
        }
        Ok(found.first().map(|k| StoredKey {
            hash: k.get("token").and_then(Value::as_str).unwrap_or_default().to_string(),
            models: k.get("models").and_then(|m| serde_json::from_value(m.clone()).ok()).unwrap_or_default(),
        }))
    }

    async fn mint(
        &self,
        alias: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<(Secret, String)> {
        let body = json!({"key_alias": alias, "models": models, "metadata": metadata});
        let v = self.call(reqwest::Method::POST, "/key/generate", Some(body)).await?;
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| miette!("LiteLLM /key/generate: no `key` in the answer"))?;
        let key = Secret::new(key.to_string());
        let hash = hash_key(key.expose());
        Ok((key, hash))
    }

    async fn rescope(
        &self,
        _alias: &str,
        hash: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<()> {
        let body = json!({"key": hash, "models": models, "metadata": metadata});
        self.call(reqwest::Method::POST, "/key/update", Some(body)).await.map(drop)
    }

    async fn revoke(&self, alias: &str, hash: &str) -> miette::Result<()> {
        let body = if hash.is_empty() { json!({"key_aliases": [alias]}) } else { json!({"keys": [hash]}) };
        match self.call(reqwest::Method::POST, "/key/delete", Some(body)).await {
            // Already gone counts as revoked.
            Err(e) if e.to_string().contains("404") => Ok(()),
            other => other.map(drop),
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
