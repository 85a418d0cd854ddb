//! Per-agent virtual keys: minting, the key store trait (file backend here,
//! database later), and the agent's env file, the one place a raw key lives.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rand::RngCore;
use serde_json::Value;

use super::keyfile::{KeyEntry, KeyFile};
use crate::fleetfile::secret::Secret;
use crate::fsutil::{sha256_hex, write_atomic};

pub const KEY_PREFIX: &str = "sk-fleet-";

/// A fresh key: 32 random bytes from the OS, hex-encoded after `sk-fleet-`.
pub fn mint_raw(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(format!("{prefix}{}", hex::encode(bytes)))
}

pub fn hash_key(raw: &str) -> String {
    sha256_hex(raw.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub hash: String,
    pub models: Vec<String>,
}

impl From<KeyEntry> for StoredKey {
    fn from(e: KeyEntry) -> Self {
        StoredKey { hash: e.hash, models: e.models }
    }
}

/// Where keys are registered so the proxy accepts them.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// A cheap synchronous look, when the backend allows one (`None`: cannot tell without a call).
    fn peek(&self, _alias: &str) -> Option<Option<StoredKey>> {
        None
    }
    async fn find(&self, alias: &str) -> miette::Result<Option<StoredKey>>;
    /// Creates a key for `alias`; returns the raw key (to be written to the env file) and its hash.
    async fn mint(
        &self,
        alias: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<(Secret, String)>;
    async fn rescope(
        &self,
        alias: &str,
        hash: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<()>;
    async fn revoke(&self, alias: &str, hash: &str) -> miette::Result<()>;
}

/// Keys in `keys.json`. A key file that cannot be read fails the key steps (naming why), not the
/// whole run, so independent work still goes on.
pub struct FileKeyStore {
    file: Result<KeyFile, String>,
}

impl FileKeyStore {
    pub fn open(path: &Path) -> Arc<Self> {
        Arc::new(FileKeyStore { file: KeyFile::load(path) })
    }

    fn file(&self) -> miette::Result<&KeyFile> {
        self.file.as_ref().map_err(|e| miette!("{e}"))
    }
}

#[async_trait::async_trait]
impl KeyStore for FileKeyStore {
    fn peek(&self, alias: &str) -> Option<Option<StoredKey>> {
        let file = self.file.as_ref().ok()?;
        Some(file.get(alias).map(StoredKey::from))
    }

    async fn find(&self, alias: &str) -> miette::Result<Option<StoredKey>> {
        Ok(self.file()?.get(alias).map(StoredKey::from))
    }

    async fn mint(
        &self,
        alias: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<(Secret, String)> {
        let raw = mint_raw(KEY_PREFIX);
        let hash = hash_key(raw.expose());
        self.rescope(alias, &hash, models, metadata).await?;
        Ok((raw, hash))
    }

    async fn rescope(
        &self,
        alias: &str,
        hash: &str,
        models: &[String],
        metadata: &BTreeMap<String, Value>,
    ) -> miette::Result<()> {
        let file = self.file()?;
        let entry = KeyEntry {
            hash: hash.to_string(),
            alias: alias.to_string(),
            models: models.to_vec(),
            metadata: metadata.clone(),
        };
        file.upsert(entry)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write key file {}", file.path().display()))
    }

    async fn revoke(&self, alias: &str, _hash: &str) -> miette::Result<()> {
        let file = self.file()?;
        file.remove(alias)
            .map(|_| ())
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write key file {}", file.path().display()))
    }
}

/// What goes in an agent's env file (mode 0600): an OpenAI-style client setup.
pub struct AgentEnv<'a> {
    pub agent: &'a str,
    pub base_url: &'a str,
    pub model: &'a str,
    pub key: &'a Secret,
}

impl AgentEnv<'_> {
    pub fn render(&self) -> String {
        format!(
            "# Written by fleet for agent {agent}. Holds this agent's LiteLLM key: keep it private (0600).\n\
             FLEET_AGENT={agent}\n\
             OPENAI_BASE_URL={base}\n\
             OPENAI_API_KEY={key}\n\
             OPENAI_MODEL={model}\n",
            agent = self.agent,
            base = self.base_url,
            key = self.key.expose(),
            model = self.model,
        )
    }

    /// Writes the file, keeping the lines the daemon's token step owns (`serve_lines`).
    pub fn write(&self, path: &Path) -> miette::Result<()> {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        let want = self.render() + &serve_lines(&now);
        if now.as_bytes() == want.as_bytes() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write env file {}", path.display()))?;
        }
        write_atomic(path, want.as_bytes(), 0o600)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write env file {}", path.display()))
    }
}

/// The variables of an agent's env file that the daemon's token step writes (`FLEET_URL`,
/// `FLEET_TOKEN`); the key step leaves them be.
pub const SERVE_VARS: [&str; 2] = ["FLEET_URL=", "FLEET_TOKEN="];

fn is_serve_line(l: &str) -> bool {
    SERVE_VARS.iter().any(|v| l.starts_with(v))
}

/// The daemon's lines of an env file's text, each ending in a newline.
pub fn serve_lines(text: &str) -> String {
    text.lines().filter(|l| is_serve_line(l)).map(|l| format!("{l}\n")).collect()
}

/// The env file's text without the daemon's lines (what the key step compares).
pub fn without_serve_lines(text: &str) -> String {
    text.lines().filter(|l| !is_serve_line(l)).map(|l| format!("{l}\n")).collect()
}

/// Sets (or, with None, removes) the daemon's lines of an env file, keeping the rest (0600).
pub fn set_serve_lines(path: &Path, serve: Option<(&str, &Secret)>) -> miette::Result<()> {
    let now =
        std::fs::read_to_string(path).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let mut want = without_serve_lines(&now);
    if let Some((url, token)) = serve {
        want.push_str(&format!("FLEET_URL={url}\nFLEET_TOKEN={}\n", token.expose()));
    }
    if want != now {
        write_atomic(path, want.as_bytes(), 0o600)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write env file {}", path.display()))?;
    }
    Ok(())
}

/// A variable of an env file (`NAME=value`), if set.
pub fn read_env_var(path: &Path, name: &str) -> Option<Secret> {
    let text = Secret::new(std::fs::read_to_string(path).ok()?);
    let prefix = format!("{name}=");
    text.expose()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| Secret::new(v.trim().to_string()))
        .filter(|v| !v.expose().is_empty())
}

/// The raw key in an env file, if the file exists and has one.
pub fn read_env_key(path: &Path) -> Option<Secret> {
    let text = Secret::new(std::fs::read_to_string(path).ok()?);
    text.expose()
        .lines()
        .find_map(|l| l.strip_prefix("OPENAI_API_KEY="))
        .map(|k| Secret::new(k.trim().to_string()))
        .filter(|k| !k.expose().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_long_random_and_prefixed() {
        let a = mint_raw(KEY_PREFIX);
        let b = mint_raw(KEY_PREFIX);
        assert!(a.expose().starts_with("sk-fleet-"));
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(hash_key(a.expose()).len(), 64);
    }

    #[test]
    fn env_file_round_trips_the_key_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("alice/env");
        let key = mint_raw(KEY_PREFIX);
        AgentEnv { agent: "alice", base_url: "http://127.0.0.1:4000/v1", model: "m", key: &key }.write(&p).unwrap();
        assert_eq!(read_env_key(&p).unwrap(), key);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(read_env_key(&dir.path().join("missing")).is_none());
    }
}
