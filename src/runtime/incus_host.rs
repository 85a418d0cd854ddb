//! `host.<name>`: another machine's incusd as fleet reaches it. With `address=` fleet enrols it
//! itself, once: its own client certificate (key 0600) in its own Incus client config
//! (`<data dir>/incus`, INCUS_CONF), the trust token redeemed over the REST API to the pinned
//! server (`incus_trust.rs`: never on a command line), the server's certificate pinned in state.
//! Later runs need no token; a server presenting another certificate is refused, never
//! re-trusted silently; a host that cannot be reached fails this step (and what depends on it)
//! with the cause. With `remote=` the remote is already in the client config: fleet only checks
//! and pins it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::incus_cli::Cli;
use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fleetfile::secret::SecretRef;
use crate::resource::Resource;
use crate::state::Record;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInputs {
    pub host: String,
    /// The remote's name in the client config (an enrolled host's own name).
    pub remote: String,
    /// The Incus client config directory (INCUS_CONF).
    pub config_dir: PathBuf,
    /// `address=`: fleet enrols the host (None: `remote=` names one already in the config).
    pub address: Option<String>,
    /// The trust token's reference (`env:EDGE_TOKEN`), never its value.
    pub trust_token: Option<String>,
    /// The architecture the fleet file declares, as Incus names it (`x86_64`, `aarch64`).
    pub arch: Option<String>,
}

impl HostInputs {
    fn cli(&self) -> Cli<'_> {
        Cli { config: Some(&self.config_dir), ..Cli::default() }
    }
}

/// `https://HOST:PORT` with Incus's default port when none is written.
pub fn normalize_address(a: &str) -> String {
    let a = a.trim_end_matches('/');
    let rest = a.strip_prefix("https://").unwrap_or(a);
    let has_port =
        rest.rsplit_once(':').is_some_and(|(h, p)| !p.contains(']') && (!h.contains(':') || h.ends_with(']')));
    if has_port {
        format!("https://{rest}")
    } else {
        format!("https://{rest}:8443")
    }
}

/// What a trust token (`incus config trust add`) carries: base64 JSON with the server's
/// certificate fingerprint and addresses.
pub fn token_fingerprint(token: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token.trim()))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["fingerprint"].as_str().filter(|f| f.len() == 64).map(str::to_string)
}

/// The sha256 of the certificate the server at `address` presents (Incus's fingerprint), read in
/// the TLS handshake itself (the certificate is self-signed; nothing is trusted by this look).
pub async fn server_fingerprint(address: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(format!("{address}/1.0")).send().await.map_err(|e| {
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why = format!("{why}: {s}");
            src = s.source();
        }
        why
    })?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .ok_or("the server presented no certificate")?;
    Ok(hex::encode(Sha256::digest(der)))
}

/// The fingerprint of a PEM certificate file (fleet's client certificate).
fn pem_fingerprint(path: &Path) -> Option<String> {
    use base64::Engine;
    let pem = std::fs::read_to_string(path).ok()?;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    Some(hex::encode(Sha256::digest(der)))
}

/// The address a remote has in the client config, if it is there.
async fn remote_address(h: &HostInputs) -> miette::Result<Option<String>> {
    let list = h.cli().run(&["remote", "list", "--format", "json"]).await?;
    let v: Value = serde_json::from_str(&list).into_diagnostic().wrap_err("incus remote list: not JSON")?;
    Ok(v[&h.remote]["Addr"].as_str().or(v[&h.remote]["addr"].as_str()).map(str::to_string))
}

pub struct HostDriver;

impl HostDriver {
    /// Enrols the host: the token's fingerprint must be what the server at the address presents;
    /// Incus checks it again itself (it is typed at its prompt), then redeems the token.
    async fn enrol(h: &HostInputs, address: &str, ctx: &StepCtx) -> miette::Result<String> {
        let Some(reference) = &h.trust_token else {
            return Err(miette!(
                "host {} is not enrolled, and the fleet file gives no `trust-token`: on that host run `incus config trust add fleet` and reference the token it prints (`trust-token=\"env:NAME\"`)",
                h.host
            ));
        };
        let secret = SecretRef::parse(reference, Path::new("/"))
            .map_err(|e| miette!("host {}: trust-token {reference}: {e}", h.host))?
            .resolve()
            .map_err(|e| {
                miette!(
                    "host {} is not enrolled yet and its trust-token cannot be read: {e}; on that host run `incus config trust add fleet` and pass the token it prints",
                    h.host
                )
            })?;
        let token = secret.expose().trim().to_string();
        let Some(want) = token_fingerprint(&token) else {
            return Err(miette!(
                "host {}: the trust-token ({reference}) is not an Incus trust token (base64 JSON from `incus config trust add`)",
                h.host
            ));
        };
        let got = server_fingerprint(address)
            .await
            .map_err(|e| miette!("host {} cannot be reached at {address}: {e}", h.host))?;
        if got != want {
            return Err(miette!(
                "host {}: the server at {address} presents certificate sha256 {got}, but the trust token was issued by sha256 {want} — the wrong address, or something in between; not enrolled",
                h.host
            ));
        }
        ctx.progress(&format!("enrolling {address} (certificate {}…)", &want[..16]));
        crate::fsutil::create_private_dir(&h.config_dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot create {}", h.config_dir.display()))?;
        // fleet's client certificate (`client.key` 0600, made by Incus; kept when there is one).
        let has = |f: &str| tokio::fs::try_exists(h.config_dir.join(f));
        if !has("client.crt").await.unwrap_or(false) || !has("client.key").await.unwrap_or(false) {
            h.cli().run(&["remote", "generate-certificate"]).await?;
        }
        // The token goes to the pinned server over its REST API, never on a command line.
        let pin = crate::tls::Pin::parse(&want).ok_or_else(|| miette!("host {}: a malformed fingerprint", h.host))?;
        let redeemed = super::incus_trust::redeem(address, pin, &h.config_dir, &token)
            .await
            .map_err(|e| miette!("host {}: enrolment with the trust token failed: {e}", h.host))?;
        if redeemed == super::incus_trust::Redeemed::AlreadyTrusted {
            ctx.progress("the host trusts fleet's certificate already; the token was not needed");
        }
        // Trusted now: `remote add` asks for no token. The fingerprint is typed at Incus's own
        // prompt, so Incus checks the server once more.
        let typed = format!("{want}\n");
        let cli = Cli { config: Some(&h.config_dir), stdin: Some(&typed), shown_args: None };
        cli.run(&["remote", "add", &h.remote, address])
            .await
            .wrap_err_with(|| format!("host {}: adding the remote failed", h.host))?;
        Ok(got)
    }

    /// Reads what fleet records of a reachable, trusting host: fingerprint, name, architectures,
    /// cluster members. `pinned`: the certificate it must present.
    async fn inspect(h: &HostInputs, address: &str, pinned: &str) -> miette::Result<Outputs> {
        let got = server_fingerprint(address)
            .await
            .map_err(|e| miette!("host {} cannot be reached at {address}: {e}", h.host))?;
        if got != pinned {
            return Err(changed(h, pinned, &got));
        }
        let info = h.cli().query(&format!("{}:/1.0", h.remote)).await.wrap_err_with(|| format!("host {}", h.host))?;
        if info["auth"] != "trusted" {
            return Err(miette!(
                "host {} does not trust fleet's client certificate (auth: {}); enrol it again with a fresh trust-token",
                h.host,
                info["auth"]
            ));
        }
        let env = &info["environment"];
        let arches: Vec<String> = env["architectures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if let Some(want) = &h.arch {
            if !arches.contains(want) {
                return Err(miette!(
                    "host {} reports architecture {}, but its gateways would get {want} images (`arch` on the host; this machine's when not written): set `arch` to what the host is",
                    h.host,
                    arches.join(", ")
                ));
            }
        }
        let clustered = env["server_clustered"].as_bool().unwrap_or(false);
        let members: Vec<String> = if clustered {
            let m = h.cli().query(&format!("{}:/1.0/cluster/members", h.remote)).await.unwrap_or_default();
            m.as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_string))
                .collect()
        } else {
            vec![]
        };
        Ok(json!({
            "remote": h.remote,
            "address": address,
            "fingerprint": got,
            "server_name": env["server_name"],
            "architectures": arches,
            "clustered": clustered,
            "members": members,
        }))
    }

    async fn converge(h: &HostInputs, pinned: Option<&str>, ctx: &StepCtx) -> miette::Result<Outputs> {
        let configured = remote_address(h).await?;
        let (address, fingerprint) = match (&h.address, configured) {
            (Some(want), Some(have)) if normalize_address(want) == normalize_address(&have) => {
                let address = normalize_address(want);
                match pinned {
                    Some(p) => (address, p.to_string()),
                    // Enrolled by a run that did not record it (or state forgotten): the server must
                    // still trust fleet's certificate; otherwise enrol afresh with the token.
                    None => {
                        let fp = server_fingerprint(&address)
                            .await
                            .map_err(|e| miette!("host {} cannot be reached at {address}: {e}", h.host))?;
                        let trusted = h
                            .cli()
                            .query(&format!("{}:/1.0", h.remote))
                            .await
                            .is_ok_and(|i| i["auth"] == "trusted");
                        if trusted {
                            ctx.progress(&format!("{} is enrolled already (certificate {}…)", h.remote, &fp[..16]));
                            (address, fp)
                        } else {
                            ctx.progress(&format!("the client config's remote {} no longer works; enrolling anew", h.remote));
                            h.cli().run(&["remote", "remove", &h.remote]).await?;
                            let fp = Self::enrol(h, &address, ctx).await?;
                            (address, fp)
                        }
                    }
                }
            }
            (Some(want), Some(have)) => {
                return Err(miette!(
                    "host {}: the Incus client config {} already has a remote {:?} at {have}, not {want}; remove it (`INCUS_CONF={} incus remote remove {}`) or give the host another name",
                    h.host,
                    h.config_dir.display(),
                    h.remote,
                    h.config_dir.display(),
                    h.remote
                ))
            }
            (Some(want), None) => {
                let address = normalize_address(want);
                let fp = Self::enrol(h, &address, ctx).await?;
                (address, fp)
            }
            (None, Some(have)) => {
                let fp = match pinned {
                    Some(p) => p.to_string(),
                    None => server_fingerprint(&have)
                        .await
                        .map_err(|e| miette!("host {} cannot be reached at {have}: {e}", h.host))?,
                };
                (have, fp)
            }
            (None, None) => {
                return Err(miette!(
                    "host {}: no remote {:?} in the Incus client config {}: add it there (`INCUS_CONF={} incus remote add {} …`), or give the host an `address` and a `trust-token` and fleet enrols it",
                    h.host,
                    h.remote,
                    h.config_dir.display(),
                    h.config_dir.display(),
                    h.remote
                ))
            }
        };
        Self::inspect(h, &address, &fingerprint).await
    }
}

fn changed(h: &HostInputs, pinned: &str, got: &str) -> miette::Report {
    miette!(
        "host {}'s server certificate changed: fleet pinned sha256 {pinned} when it enrolled the host, and it now presents sha256 {got}. Not trusted silently: if the host was reinstalled, run `fleet state forget host.{}` and apply again with a fresh trust-token",
        h.host,
        h.host
    )
}

fn pinned(prior: &Record) -> Option<&str> {
    prior.outputs.get("fingerprint").and_then(Value::as_str)
}

#[async_trait::async_trait]
impl Driver for HostDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let (Ok(h), Some(pin)) = (prior.inputs_as::<HostInputs>(), pinned(prior)) else {
            return Drift::Update("nothing pinned".into());
        };
        let Some(address) = prior.outputs.get("address").and_then(Value::as_str) else {
            return Drift::Update("no address recorded".into());
        };
        match server_fingerprint(address).await {
            Err(e) => Drift::Update(format!("cannot be reached at {address}: {e}")),
            Ok(got) if got != pin => Drift::Update(format!("its server certificate changed (now sha256 {got})")),
            Ok(_) => match h.cli().query(&format!("{}:/1.0", h.remote)).await {
                Ok(i) if i["auth"] == "trusted" => Drift::InSync,
                Ok(i) => Drift::Update(format!("it no longer trusts fleet's client certificate (auth: {})", i["auth"])),
                Err(e) => Drift::Update(format!("incus cannot query it: {e}")),
            },
        }
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let h = r.inputs_as::<HostInputs>()?;
        let _one = config_lock(&h.config_dir).await;
        Self::converge(&h, None, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let h = r.inputs_as::<HostInputs>()?;
        let _one = config_lock(&h.config_dir).await;
        let old = prior.inputs_as::<HostInputs>().ok();
        // The same host at the same address keeps its pin; another address is a new enrolment.
        let same = old
            .as_ref()
            .is_some_and(|o| o.address == h.address && o.remote == h.remote && o.config_dir == h.config_dir);
        Self::converge(&h, if same { pinned(prior) } else { None }, ctx).await
    }

    /// Revokes fleet's client certificate on a host fleet enrolled (best effort: the host may be
    /// gone) and removes the remote from fleet's client config. A `remote=` host is the user's:
    /// left as it is.
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let h = prior.inputs_as::<HostInputs>()?;
        let _one = config_lock(&h.config_dir).await;
        if h.address.is_none() || remote_address(&h).await.ok().flatten().is_none() {
            return Ok(());
        }
        match pem_fingerprint(&h.config_dir.join("client.crt")) {
            Some(fp) => {
                let path = format!("{}:/1.0/certificates/{fp}", h.remote);
                if let Err(e) = h.cli().run(&["query", "-X", "DELETE", &path]).await {
                    ctx.progress(&format!(
                        "could not revoke fleet's certificate on {} ({e}); removing the remote anyway",
                        h.host
                    ));
                }
            }
            None => ctx.progress("no client certificate to revoke"),
        }
        h.cli().run(&["remote", "remove", &h.remote]).await?;
        Ok(())
    }
}

/// One host step at a time per client config: `incus remote add/remove` rewrite its config.yml
/// whole, and two at once (two hosts enrolled in one run) lose one of the remotes.
async fn config_lock(dir: &Path) -> tokio::sync::OwnedMutexGuard<()> {
    type Locks = std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::LazyLock<Locks> = std::sync::LazyLock::new(Default::default);
    let lock = LOCKS.lock().unwrap_or_else(|p| p.into_inner()).entry(dir.to_path_buf()).or_default().clone();
    lock.lock_owned().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_incus_default_port() {
        assert_eq!(normalize_address("https://10.0.0.2"), "https://10.0.0.2:8443");
        assert_eq!(normalize_address("https://10.0.0.2:9443/"), "https://10.0.0.2:9443");
        assert_eq!(normalize_address("https://[fd00::2]"), "https://[fd00::2]:8443");
        assert_eq!(normalize_address("https://[fd00::2]:9000"), "https://[fd00::2]:9000");
    }

    #[test]
    fn a_trust_token_names_its_server() {
        // Shaped as `incus config trust add` prints it (Incus 6.0.4): base64 of this JSON.
        use base64::Engine;
        let fp = "eddcb0b37f5b33d36eea326d2cbf4e43423f3e7ff9a2b9521181d1d72b5750a3";
        let json = format!(
            r#"{{"client_name":"fleet","fingerprint":"{fp}","addresses":["10.213.9.2:8443"],"secret":"x","expires_at":"0001-01-01T00:00:00Z"}}"#
        );
        let t = base64::engine::general_purpose::STANDARD.encode(json);
        assert_eq!(token_fingerprint(&t).as_deref(), Some(fp));
        assert_eq!(token_fingerprint("not a token"), None);
    }
}
