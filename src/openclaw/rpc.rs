//! OpenClaw gateway RPC client, protocol v4 over WebSocket (JSON text frames):
//! `connect.challenge` → `connect` (token, operator scopes) → `hello-ok`; then
//! requests correlated by id, events broadcast, a timeout per call, typed errors.
//! See docs/openclaw-rpc.md for the frames this was written from.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::dial::DialError;
use crate::tls::Pin;

pub const PROTOCOL: u64 = 4;
/// Releases this client was checked against (newer ones are tried, with a warning).
pub const KNOWN_SERVER_VERSIONS: [&str; 1] = ["2026.9.6"];

#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum RpcError {
    #[error("cannot connect to the gateway at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("the gateway is still starting")]
    Starting { retry_after: Duration },
    #[error("the gateway refused the token: {0}")]
    Auth(String),
    #[error("the gateway speaks protocol {got}; fleet speaks {PROTOCOL}: {message}")]
    Protocol { got: String, message: String },
    #[error("{method}: {message}")]
    Remote { method: String, code: String, message: String, details: Value },
    #[error("{method}: no answer within {secs} s")]
    Timeout { method: String, secs: u64 },
    #[error("the gateway closed the connection")]
    Closed,
    #[error("the TLS certificate presented at {url} (sha256 {presented}) does not match the pin fleet recorded for this gateway (sha256 {pinned}): another server, or its certificate was replaced; fleet sends it nothing (`fleet apply` mints and pins a new one)")]
    Pin { url: String, pinned: String, presented: String },
}

/// Methods that change nothing: safe to send again.
const READS: [&str; 6] =
    ["health", "agents.list", "config.get", "agents.files.get", "agents.files.list", "chat.history"];

/// 250 ms, 500 ms, … capped at 2 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis((250 * (attempt as u64 + 1)).min(2000))
}

impl RpcError {
    /// The gateway could not serve the request right now (code `UNAVAILABLE`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RpcError::Remote { code, .. } if code == "UNAVAILABLE")
    }

    /// The gateway refused because it is restarting ("… unavailable during gateway restart"): the
    /// call can be made again to the process that comes back.
    pub fn during_restart(&self) -> bool {
        self.message_contains("during gateway restart")
    }

    /// "agent \"x\" already exists" and the like: the message is the only discriminator the server gives.
    pub fn message_contains(&self, needle: &str) -> bool {
        matches!(self, RpcError::Remote { message, .. } if message.contains(needle))
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub payload: Value,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, (String, String, Value)>>>>>;

pub struct Client {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: broadcast::Sender<Event>,
    next: AtomicU64,
    pub server_version: String,
    pub boot_id: String,
    url: String,
}

fn trace(url: &str, method: &str) {
    if let Ok(path) = std::env::var("FLEET_RPC_TRACE") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{url} {method}");
        }
    }
}

impl Client {
    /// One attempt at a gateway reached in clear (this machine's loopback).
    pub async fn connect(url: &str, token: &str) -> Result<Client, RpcError> {
        Client::connect_pinned(url, None, token).await
    }

    /// One attempt: open (over TLS to the pinned certificate when `pin` is given), handshake,
    /// check the protocol.
    pub async fn connect_pinned(url: &str, pin: Option<Pin>, token: &str) -> Result<Client, RpcError> {
        let cerr = |why: String| RpcError::Connect { url: url.to_string(), why };
        let ws = super::dial::open(url, pin).await.map_err(|e| match e {
            DialError::Pin(m) => {
                RpcError::Pin { url: url.to_string(), pinned: m.pinned.hex(), presented: m.presented.hex() }
            }
            DialError::Other(why) => cerr(why),
        })?;
        let (mut sink, mut stream) = ws.split();

        // The server speaks first: a challenge (its nonce only matters for device signatures).
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| cerr("no challenge".into()))?;
        match first {
            Some(Ok(Message::Text(t))) if t.contains("connect.challenge") => {}
            Some(Ok(Message::Close(_))) | None => {
                return Err(RpcError::Starting { retry_after: Duration::from_millis(500) })
            }
            other => return Err(cerr(format!("unexpected first frame: {other:?}"))),
        }
        let connect = json!({"type": "req", "id": "0", "method": "connect", "params": {
            "minProtocol": PROTOCOL, "maxProtocol": PROTOCOL,
            "client": {"id": "gateway-client", "version": env!("CARGO_PKG_VERSION"), "platform": "linux", "mode": "backend"},
            "role": "operator",
            "scopes": ["operator.admin", "operator.read", "operator.write"],
            "caps": [],
            "auth": {"token": token},
        }});
        sink.send(Message::Text(connect.to_string().into())).await.map_err(|e| cerr(e.to_string()))?;
        let hello = loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .map_err(|_| cerr("no answer to connect".into()))?;
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => {
                    return Err(RpcError::Starting { retry_after: Duration::from_millis(500) })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(cerr(e.to_string())),
            };
            let v: Value = serde_json::from_str(&text).map_err(|e| cerr(e.to_string()))?;
            if v["type"] == "res" && v["id"] == "0" {
                break v;
            }
        };
        if hello["ok"] != true {
            let e = &hello["error"];
            let code = e["code"].as_str().unwrap_or_default();
            let detail = e.pointer("/details/code").and_then(Value::as_str).unwrap_or_default();
            let message = e["message"].as_str().unwrap_or_default().to_string();
            return Err(match (code, detail) {
                ("UNAVAILABLE", _) => {
                    RpcError::Starting { retry_after: Duration::from_millis(e["retryAfterMs"].as_u64().unwrap_or(500)) }
                }
                (_, "PROTOCOL_MISMATCH") => RpcError::Protocol {
                    got: e.pointer("/details/expectedProtocol").map(|v| v.to_string()).unwrap_or_default(),
                    message,
                },
                (_, "AUTH_TOKEN_MISMATCH") | ("NOT_PAIRED", _) => RpcError::Auth(message),
                _ => RpcError::Remote {
                    method: "connect".into(),
                    code: code.into(),
                    message,
                    details: e["details"].clone(),
                },
            });
        }
        let payload = &hello["payload"];
        if payload["protocol"].as_u64() != Some(PROTOCOL) {
            return Err(RpcError::Protocol {
                got: payload["protocol"].to_string(),
                message: "unsupported protocol".into(),
            });
        }
        let server_version = payload.pointer("/server/version").and_then(Value::as_str).unwrap_or("?").to_string();
        if !KNOWN_SERVER_VERSIONS.contains(&server_version.as_str()) {
            tracing::warn!(
                "gateway at {url} runs OpenClaw {server_version}; fleet was checked against {KNOWN_SERVER_VERSIONS:?}"
            );
        }
        let boot_id = payload.pointer("/server/bootId").and_then(Value::as_str).unwrap_or_default().to_string();

        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(1024);
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let (p2, ev2) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                match v["type"].as_str() {
                    Some("res") => {
                        let id = v["id"].as_str().unwrap_or_default().to_string();
                        if let Some(tx) = p2.lock().expect("pending").remove(&id) {
                            let r = if v["ok"] == true {
                                Ok(v["payload"].clone())
                            } else {
                                let e = &v["error"];
                                Err((
                                    e["code"].as_str().unwrap_or_default().to_string(),
                                    e["message"].as_str().unwrap_or_default().to_string(),
                                    e["details"].clone(),
                                ))
                            };
                            let _ = tx.send(r);
                        }
                    }
                    Some("event") => {
                        let _ = ev2.send(Event {
                            name: v["event"].as_str().unwrap_or_default().to_string(),
                            payload: v["payload"].clone(),
                        });
                    }
                    _ => {}
                }
            }
            // Closed: every waiting call learns it now rather than at its timeout.
            p2.lock().expect("pending").clear();
        });
        Ok(Client { out, pending, events, next: AtomicU64::new(1), server_version, boot_id, url: url.to_string() })
    }

    /// Connects, retrying while the gateway starts (or is not listening yet), until `deadline`.
    pub async fn connect_retry(url: &str, pin: Option<Pin>, token: &str, within: Duration) -> Result<Client, RpcError> {
        let t0 = Instant::now();
        loop {
            match Client::connect_pinned(url, pin, token).await {
                Ok(c) => return Ok(c),
                Err(e @ (RpcError::Auth(_) | RpcError::Protocol { .. } | RpcError::Pin { .. })) => return Err(e),
                Err(e) if t0.elapsed() >= within => return Err(e),
                Err(RpcError::Starting { retry_after }) => tokio::time::sleep(retry_after).await,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Whether the connection is gone (the gateway closed it, or it broke).
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }

    /// One request. A read the gateway answers with `UNAVAILABLE` (a handler caught mid-reload:
    /// "Plugin openai was reloaded or disabled", seen at 50 agents) is sent again after a short
    /// pause, a few times, within the same overall timeout. Writes are not: the gateway also says
    /// `UNAVAILABLE` for any exception in a handler (a refused config write) and for its rate
    /// limit, and each retried `config.patch` would count against that limit.
    pub async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
        let t0 = Instant::now();
        let mut attempt = 0u32;
        let read = READS.contains(&method);
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            match self.call_once(method, params.clone(), left).await {
                Err(e)
                    if read && e.is_unavailable() && attempt < 8 && t0.elapsed() + retry_pause(attempt) < timeout =>
                {
                    tracing::debug!("{e}; retrying");
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, RpcError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id.clone(), tx);
        trace(&self.url, method);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        if self.out.send(Message::Text(frame.to_string().into())).is_err() {
            return Err(RpcError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err(RpcError::Timeout { method: method.to_string(), secs: timeout.as_secs() })
            }
            Ok(Err(_)) => Err(RpcError::Closed),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err((code, message, details)))) => {
                Err(RpcError::Remote { method: method.to_string(), code, message, details })
            }
        }
    }

    /// A call with the default timeout (30 s).
    pub async fn req(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call(method, params, Duration::from_secs(30)).await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.out.send(Message::Close(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scripted peer: challenge, hello-ok, then answers each request with the next of `answers`
    /// (`None` = ok). Returns its URL and how many requests it saw.
    async fn peer(answers: Vec<Option<&'static str>>) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let challenge = json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n"}});
            ws.send(Message::Text(challenge.to_string().into())).await.unwrap();
            let _connect = ws.next().await;
            let hello = json!({"type": "res", "id": "0", "ok": true,
                "payload": {"protocol": PROTOCOL, "server": {"version": KNOWN_SERVER_VERSIONS[0]}}});
            ws.send(Message::Text(hello.to_string().into())).await.unwrap();
            let mut answers = answers.into_iter();
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                seen2.fetch_add(1, Ordering::Relaxed);
                let id = serde_json::from_str::<Value>(&t).unwrap()["id"].clone();
                let res = match answers.next().flatten() {
                    None => json!({"type": "res", "id": id, "ok": true, "payload": {"agents": []}}),
                    Some(code) => json!({"type": "res", "id": id, "ok": false,
                        "error": {"code": code, "message": "PluginInstanceUnavailableError: Plugin openai was reloaded"}}),
                };
                ws.send(Message::Text(res.to_string().into())).await.unwrap();
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_request_caught_mid_reload_is_sent_again() {
        let (url, seen) = peer(vec![Some("UNAVAILABLE"), Some("UNAVAILABLE"), None]).await;
        let c = Client::connect(&url, "t").await.unwrap();
        c.req("agents.list", json!({})).await.expect("succeeds on the third try");
        assert_eq!(seen.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let (url, seen) = peer(vec![Some("INVALID_REQUEST"), None]).await;
        let c = Client::connect(&url, "t").await.unwrap();
        let e = c.req("agents.list", json!({})).await.unwrap_err();
        assert!(!e.is_unavailable() && e.to_string().contains("reloaded"), "{e}");
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_write_answered_unavailable_is_not_sent_again() {
        let (url, seen) = peer(vec![Some("UNAVAILABLE"), None]).await;
        let c = Client::connect(&url, "t").await.unwrap();
        let e = c.req("config.patch", json!({})).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_calls_timeout() {
        let (url, seen) = peer(vec![Some("UNAVAILABLE"); 20]).await;
        let c = Client::connect(&url, "t").await.unwrap();
        // 600 ms leaves room for the 250 ms pause, not for the 500 ms one after it.
        let e = c.call("agents.list", json!({}), Duration::from_millis(600)).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!((1..=2).contains(&seen.load(Ordering::Relaxed)), "{}", seen.load(Ordering::Relaxed));
    }
}
