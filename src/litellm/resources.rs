//! Drivers for `litellm.master-key`, `litellm.config` and `key.<agent>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::keys::{hash_key, mint_raw, read_env_key, AgentEnv, KeyStore};
use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fleetfile::secret::Secret;
use crate::fsutil::{sha256_hex, write_atomic};
use crate::resource::Resource;
use crate::state::Record;

fn file_sha(path: &std::path::Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| sha256_hex(&b))
}

/// `litellm.master-key`, `litellm.callback-token`, `gateway.<gw>.token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInputs {
    pub file: PathBuf,
    /// What minted values start with (`sk-fleet-admin-`…), so a leaked one is recognisable.
    pub prefix: String,
}

/// `litellm.config`: what the plan shows of the files (their content is in the resource's files).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigInputs {
    pub models: Vec<String>,
    pub key_backend: String,
    /// File name → sha256 of its content.
    pub files: BTreeMap<String, String>,
}

/// A secret fleet mints once into a 0600 file (`litellm.master-key`, `litellm.callback-token`,
/// gateway tokens). An existing file is adopted: replacing it by hand rotates the secret.
pub struct SecretFileDriver;

/// The secret in `path`, minted (`prefix` + 32 random bytes, 0600) when the file is absent or empty.
pub fn ensure_secret_file(path: &Path, prefix: &str) -> miette::Result<Secret> {
    if let Some(existing) = std::fs::read_to_string(path).ok().filter(|s| !s.trim().is_empty()) {
        return Ok(Secret::new(existing.trim().to_string()));
    }
    let key = mint_raw(prefix);
    write_atomic(path, format!("{}\n", key.expose()).as_bytes(), 0o600)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

impl SecretFileDriver {
    fn ensure(r: &Resource) -> miette::Result<Outputs> {
        let SecretInputs { file, prefix } = r.inputs_as()?;
        Ok(json!({"sha256": hash_key(ensure_secret_file(&file, &prefix)?.expose())}))
    }
}

#[async_trait::async_trait]
impl Driver for SecretFileDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(SecretInputs { file, .. }) = prior.inputs_as() else {
            return Drift::Replace("no file recorded".into());
        };
        let path = file.display();
        match std::fs::read_to_string(&file) {
            Ok(s) if !s.trim().is_empty() => {
                if Some(hash_key(s.trim()).as_str()) == prior.outputs.get("sha256").and_then(Value::as_str) {
                    Drift::InSync
                } else {
                    Drift::Update(format!("{path} changed outside fleet; the new value is adopted"))
                }
            }
            _ => Drift::Replace(format!("{path} is missing")),
        }
    }
    async fn create(&self, r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r)
    }
    async fn update(&self, r: &Resource, _prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r)
    }
    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        let SecretInputs { file, .. } = prior.inputs_as()?;
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", file.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Any resource made of files written verbatim (`litellm.config`: config.yaml + fleet_auth.py).
pub struct FilesDriver;

impl FilesDriver {
    fn write_all(r: &Resource) -> miette::Result<Outputs> {
        let mut files = serde_json::Map::new();
        for f in &r.files {
            let sha = sha256_hex(&f.content);
            if file_sha(&f.path).as_deref() != Some(sha.as_str()) {
                write_atomic(&f.path, &f.content, f.mode)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot write {}", f.path.display()))?;
            }
            files.insert(f.path.display().to_string(), json!(sha));
        }
        Ok(json!({"files": files}))
    }
}

#[async_trait::async_trait]
impl Driver for FilesDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Some(files) = prior.outputs.get("files").and_then(Value::as_object) else {
            return Drift::Update("no files recorded".into());
        };
        for (path, sha) in files {
            match file_sha(std::path::Path::new(path)) {
                None => return Drift::Update(format!("{path} is missing")),
                Some(s) if Some(s.as_str()) != sha.as_str() => {
                    return Drift::Update(format!("{path} changed outside fleet"))
                }
                _ => {}
            }
        }
        Drift::InSync
    }
    async fn create(&self, r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::write_all(r)
    }
    async fn update(&self, r: &Resource, prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        let out = Self::write_all(r)?;
        // Files this resource wrote before but no longer wants.
        if let Some(old) = prior.outputs.get("files").and_then(Value::as_object) {
            for path in old.keys().filter(|p| !r.files.iter().any(|f| f.path.display().to_string() == **p)) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(out)
    }
    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        if let Some(files) = prior.outputs.get("files").and_then(Value::as_object) {
            for path in files.keys() {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).into_diagnostic().wrap_err_with(|| format!("cannot remove {path}"))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// `key.<agent>`: one virtual key per agent, scoped to its models; raw key only in its env file.
pub struct KeyDriver {
    pub store: Arc<dyn KeyStore>,
}

/// `key.<agent>`: the key's alias and scope, and the env file its raw value goes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInputs {
    pub alias: String,
    pub models: Vec<String>,
    /// `{"agent": name}`, stored with the key.
    pub metadata: BTreeMap<String, Value>,
    pub env_file: PathBuf,
    /// The proxy as the agent reaches it (written into the env file).
    pub base_url: String,
    pub model: String,
}

impl KeyInputs {
    fn agent(&self) -> &str {
        self.metadata.get("agent").and_then(Value::as_str).unwrap_or_default()
    }

    fn outputs(&self, hash: &str) -> Outputs {
        json!({"hash": hash, "alias": self.alias, "models": self.models})
    }
}

impl KeyDriver {
    /// Makes the store and the env file agree with the inputs, keeping an existing key when its raw
    /// value is still at hand (re-apply never re-mints), minting otherwise.
    async fn converge(&self, k: &KeyInputs) -> miette::Result<Outputs> {
        let stored = self.store.find(&k.alias).await?;
        let raw = read_env_key(&k.env_file);
        if let (Some(stored), Some(raw)) = (&stored, &raw) {
            let h = hash_key(raw.expose());
            if h == stored.hash {
                self.store.rescope(&k.alias, &h, &k.models, &k.metadata).await?;
                AgentEnv { agent: k.agent(), base_url: &k.base_url, model: &k.model, key: raw }.write(&k.env_file)?;
                return Ok(k.outputs(&h));
            }
        }
        if let Some(stored) = stored {
            // A key we can no longer hand out (its raw value is lost): revoke before minting anew.
            self.store.revoke(&k.alias, &stored.hash).await?;
        }
        let (raw, hash) = self.store.mint(&k.alias, &k.models, &k.metadata).await?;
        AgentEnv { agent: k.agent(), base_url: &k.base_url, model: &k.model, key: &raw }.write(&k.env_file)?;
        Ok(k.outputs(&hash))
    }
}

#[async_trait::async_trait]
impl Driver for KeyDriver {
    async fn observe(&self, prior: &Record, desired: &Resource) -> Drift {
        let Ok(k) = prior.inputs_as::<KeyInputs>() else { return Drift::Replace("unreadable record".into()) };
        let recorded = prior.outputs.get("hash").and_then(Value::as_str).unwrap_or_default();
        let Some(raw) = read_env_key(&k.env_file) else {
            return Drift::Replace(format!(
                "{} is missing; its key cannot be recovered, a new one will be minted",
                k.env_file.display()
            ));
        };
        if hash_key(raw.expose()) != recorded {
            return Drift::Replace(format!(
                "{} holds a key fleet did not mint; a new one will be minted",
                k.env_file.display()
            ));
        }
        if let Some(found) = self.store.peek(&k.alias) {
            match found {
                None => return Drift::Update("its entry is missing from the key file".into()),
                Some(s) if s.hash != recorded => return Drift::Update("the key file holds another key for it".into()),
                Some(s) if s.models != k.models => {
                    return Drift::Update("its scope in the key file changed outside fleet".into())
                }
                _ => {}
            }
        }
        // The env file's other lines, as the desired inputs would write them.
        if let Ok(want) = desired.inputs_as::<KeyInputs>() {
            if want.env_file == k.env_file {
                let expect = AgentEnv { agent: k.agent(), base_url: &k.base_url, model: &k.model, key: &raw }.render();
                let now = std::fs::read_to_string(&k.env_file).ok().map(|t| super::keys::without_serve_lines(&t));
                if now.as_deref() != Some(expect.as_str()) {
                    return Drift::Update(format!("{} changed outside fleet", k.env_file.display()));
                }
            }
        }
        Drift::InSync
    }

    async fn create(&self, r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        self.converge(&r.inputs_as::<KeyInputs>()?).await
    }

    async fn update(&self, r: &Resource, prior: &Record, _ctx: &StepCtx) -> miette::Result<Outputs> {
        let k = r.inputs_as::<KeyInputs>()?;
        let old = prior.inputs_as::<KeyInputs>()?;
        if old.env_file != k.env_file {
            // The data dir moved: carry the key over instead of minting a new one.
            if let (Some(raw), None) = (read_env_key(&old.env_file), read_env_key(&k.env_file)) {
                AgentEnv { agent: k.agent(), base_url: &k.base_url, model: &k.model, key: &raw }.write(&k.env_file)?;
                let _ = std::fs::remove_file(&old.env_file);
            }
        }
        self.converge(&k).await
    }

    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        let k = prior.inputs_as::<KeyInputs>()?;
        let hash = prior.outputs.get("hash").and_then(Value::as_str).unwrap_or_default();
        self.store.revoke(&k.alias, hash).await?;
        match std::fs::remove_file(&k.env_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)
                .into_diagnostic()
                .wrap_err_with(|| format!("key revoked, but cannot remove {}", k.env_file.display())),
            _ => Ok(()),
        }
    }
}
