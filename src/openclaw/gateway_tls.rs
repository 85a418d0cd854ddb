//! The certificate of a gateway fleet reaches over TLS (one on another host, `Launch::over_tls`):
//! fleet mints it (EC P-256, the address it is published on as its name), puts it and its key
//! (0600) into the gateway's home, tells OpenClaw to serve them (`gateway.tls`, `autoGenerate`
//! off: OpenClaw's default would make its own RSA certificate with no name when the files are
//! missing), and pins it: the handle file and the record carry its sha256 — a hash, never the
//! key — and every caller that reaches the gateway (`GatewayRef::live`) dials only that
//! certificate.
//!
//! Kept while the home still holds the pinned certificate and its key, and it is not close to its
//! end: re-applying a converged fleet mints nothing. A certificate that is gone or another than
//! the pinned one is replaced by a new one at the gateway's next start (the plan shows the gateway
//! unhealthy: its pin does not match). Valid ten years; replaced from 30 days before its end.

use std::path::Path;

use miette::miette;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::runtime::{HomeFile, Launch, Runtime};
use crate::tls::Pin;

/// Where the certificate and its key are in the gateway's home.
pub const CERT: &str = "tls/gateway-cert.pem";
pub const KEY: &str = "tls/gateway-key.pem";
/// How long a minted certificate is valid: ten years (OpenClaw's own generated ones are too).
/// fleet checks the pin, not the dates, but other clients may.
pub const VALID_DAYS: u32 = 3650;
/// A certificate this close to its end is replaced at the next apply.
pub const RENEW_BEFORE_S: i64 = 30 * 86_400;

/// `gateway.tls` in the gateway's openclaw.json: paths as the gateway sees its home.
pub fn settings(home_inside: &Path) -> Value {
    json!({
        "enabled": true,
        "autoGenerate": false,
        "certPath": home_inside.join(CERT),
        "keyPath": home_inside.join(KEY),
    })
}

/// What fleet records of a gateway's certificate (`"tls"` in its handle file and record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRecord {
    /// The pin: sha256 of the certificate's DER, hex.
    pub sha256: String,
    /// Its end, in seconds since the epoch.
    pub not_after: i64,
}

impl TlsRecord {
    pub fn recorded_in(doc: &Value) -> Option<TlsRecord> {
        serde_json::from_value(doc.get("tls")?.clone()).ok()
    }

    /// Whether it ends within `RENEW_BEFORE_S` of `now`.
    pub fn due(&self, now: i64) -> bool {
        self.not_after - now < RENEW_BEFORE_S
    }

    fn pin(&self) -> Option<Pin> {
        Pin::parse(&self.sha256)
    }
}

/// The certificate the gateway will serve, and the files to place for it (none when the home
/// holds the pinned one already). `recorded`: what the gateway's last start pinned.
pub async fn ensure(
    l: &Launch,
    rt: &dyn Runtime,
    recorded: Option<TlsRecord>,
) -> miette::Result<(TlsRecord, Vec<HomeFile>)> {
    let now = crate::tls::mint::now_s();
    if let Some(rec) = recorded.filter(|r| !r.due(now)) {
        let there = rt.read_home(l, Path::new(CERT)).await?;
        let kept = there.as_deref().and_then(Pin::of_pem).is_some_and(|p| Some(p) == rec.pin());
        if kept && rt.home_has(l, Path::new(KEY)).await {
            return Ok((rec, Vec::new()));
        }
    }
    let address = l.container.as_ref().and_then(|c| c.listen.as_deref()).unwrap_or("127.0.0.1");
    let minted = crate::tls::mint(address, VALID_DAYS)
        .map_err(|e| miette!("cannot mint a TLS certificate for gateway {}: {e}", l.gateway))?;
    let rec = TlsRecord { sha256: minted.pin.hex(), not_after: minted.not_after };
    let files = vec![
        HomeFile { path: CERT.into(), content: minted.cert_pem.clone().into_bytes(), mode: 0o644 },
        HomeFile { path: KEY.into(), content: minted.key_pem().as_bytes().to_vec(), mode: 0o600 },
    ];
    Ok((rec, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_name_fleets_files_and_turn_openclaws_own_certificate_off() {
        let s = settings(Path::new("/root"));
        assert_eq!(s["enabled"], true);
        assert_eq!(s["autoGenerate"], false, "OpenClaw's default is to make its own");
        assert_eq!(s["certPath"], "/root/tls/gateway-cert.pem");
        assert_eq!(s["keyPath"], "/root/tls/gateway-key.pem");
    }

    #[test]
    fn a_certificate_is_renewed_a_month_before_its_end() {
        let r = TlsRecord { sha256: "00".repeat(32), not_after: 100 * 86_400 };
        assert!(!r.due(60 * 86_400));
        assert!(r.due(71 * 86_400));
        let doc = json!({"tls": {"sha256": r.sha256, "not_after": r.not_after}});
        assert_eq!(TlsRecord::recorded_in(&doc), Some(r));
        assert_eq!(TlsRecord::recorded_in(&json!({})), None);
    }
}
