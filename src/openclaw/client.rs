//! The typed OpenClaw gateway client, over the protocol client in `rpc.rs`: what fleet
//! asks a gateway (health, agents, workspace files, config, chat), each as a method with
//! typed answers, and `GatewayRef`, the one way to reach a gateway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rpc::{Client, Event, RpcError};
use crate::tls::Pin;

/// `agents.create` / `agents.delete` are serialised inside the gateway (each rewrites its config
/// and reloads): many in flight at once each wait for the others (≈5 s each at 61 agents), so
/// they get a generous timeout.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a `config.patch` (and the `config.get` before it) may take: on a loaded 2-core machine a
/// patch right after an `agents.create` went unanswered for 60 s once; the gateway answers them in
/// under 2 s when idle.
const PATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait before asking again for a state lease another operation holds.
const LEASE_PAUSE: Duration = Duration::from_secs(2);

/// How to reach a gateway: its name (for messages), the URL its runtime gives, its token file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRef {
    pub name: String,
    pub url: String,
    pub token_file: PathBuf,
}

pub fn read_token(path: &Path) -> miette::Result<String> {
    let t =
        std::fs::read_to_string(path).into_diagnostic().wrap_err_with(|| format!("cannot read {}", path.display()))?;
    Ok(t.trim().to_string())
}

/// The handle file of the gateway whose token is `token_file` (both live in the gateway's dir).
pub fn handle_path(token_file: &Path) -> PathBuf {
    token_file.with_file_name("gateway.handle")
}

impl GatewayRef {
    /// Where the gateway listens now, and the certificate it must present there: the URL and the
    /// pin its last start recorded in the handle file (a gateway on a cluster is published on the
    /// member it landed on; one on another host serves the certificate fleet minted for it), else
    /// the URL it is known by, with no pin.
    pub fn live(&self) -> (String, Option<Pin>) {
        let doc = std::fs::read(handle_path(&self.token_file))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let url = doc.as_ref().and_then(|d| d.get("url")?.as_str().map(str::to_string));
        let pin = doc.as_ref().and_then(|d| d.pointer("/tls/sha256")?.as_str().and_then(Pin::parse));
        (url.unwrap_or_else(|| self.url.clone()), pin)
    }

    /// `live`'s URL.
    pub fn live_url(&self) -> String {
        self.live().0
    }

    /// Where the gateway is, whatever the scheme: a gateway reached over `wss://` where it was
    /// reached over `ws://` is the same gateway (an agent on it has not moved).
    pub fn place(&self) -> &str {
        self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest)
    }

    /// Connects, retrying while the gateway starts, for up to 30 s.
    pub async fn connect(&self) -> miette::Result<GatewayClient> {
        self.connect_within(Duration::from_secs(30)).await
    }

    /// Connects, retrying while the gateway starts (or is not listening yet), for up to `within`.
    pub async fn connect_within(&self, within: Duration) -> miette::Result<GatewayClient> {
        let token = read_token(&self.token_file)?;
        let (url, pin) = self.live();
        let rpc = Client::connect_retry(&url, pin, &token, within)
            .await
            .map_err(miette::Report::new)
            .wrap_err_with(|| format!("gateway {}", self.name))?;
        Ok(GatewayClient { rpc, name: self.name.clone() })
    }

    /// One connection attempt within `within`; None when the gateway cannot be reached now.
    pub async fn try_connect(&self, within: Duration) -> Option<GatewayClient> {
        let token = read_token(&self.token_file).ok()?;
        let (url, pin) = self.live();
        let rpc = tokio::time::timeout(within, Client::connect_pinned(&url, pin, &token)).await.ok()?.ok()?;
        Some(GatewayClient { rpc, name: self.name.clone() })
    }

    /// The agent ids the gateway lists right now, asked in one quick attempt (None: it cannot be
    /// asked — for observing, where an unreachable gateway is the gateway step's drift).
    pub async fn listed_now(&self) -> Option<Vec<String>> {
        let c = self.try_connect(Duration::from_secs(3)).await?;
        c.agent_ids().await.ok()
    }

    /// Its config as `config.get` gives it (keys redacted), in one quick attempt; None when it cannot
    /// be asked or does not answer within 10 s. For a gateway whose home is on another host: one of
    /// this machine is read from its file (`gateway::config_here`), which is cheaper (the gateway
    /// answered `config.get` in ~330 ms here, building its schema's hints) and holds the real keys.
    pub async fn config_now(&self) -> Option<Value> {
        let c = self.try_connect(Duration::from_secs(3)).await?;
        let mut got = c.rpc.call("config.get", json!({}), Duration::from_secs(10)).await.ok()?;
        Some(got["config"].take()).filter(Value::is_object)
    }
}

/// A workspace file as the gateway has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Missing,
    Present { hash: String },
}

/// What became of a `config.patch`.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    /// Applied (nothing to do when `noop`); `changed` lists the paths the gateway changed.
    Applied { noop: bool, changed: Value },
    /// Persisted; the gateway restarts itself to finish applying it (a new boot follows).
    Restarting,
    /// The config kept moving underneath between reading its hash and patching it.
    Conflict,
}

/// A connected gateway.
pub struct GatewayClient {
    rpc: Client,
    name: String,
}

impl GatewayClient {
    pub fn boot_id(&self) -> &str {
        &self.rpc.boot_id
    }
    pub fn server_version(&self) -> &str {
        &self.rpc.server_version
    }
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.rpc.events()
    }
    /// The protocol client, for calls this client has no method for yet.
    pub fn rpc(&self) -> &Client {
        &self.rpc
    }

    /// `health`, answered within 30 s: a gateway busy deleting agents (a config reload each, its
    /// liveness heartbeat overdue) took more than 9 s on a loaded 2-core machine, and a plan then
    /// called it drift — busy is not broken.
    pub async fn healthy(&self) -> Result<bool, RpcError> {
        Ok(self.rpc.call("health", json!({}), Duration::from_secs(30)).await?["ok"] == true)
    }

    pub async fn agent_ids(&self) -> Result<Vec<String>, RpcError> {
        let v = self.rpc.req("agents.list", json!({})).await?;
        Ok(v["agents"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    /// A mutating call that waits out OpenClaw's state leases: a lease held by an operation still
    /// running inside the gateway (e.g. the `agents.delete` of a run that was killed, still being
    /// carried out) is answered `OPENCLAW_STATE_LEASE_HELD`; a lease the gateway lost before the
    /// operation began its work (`OPENCLAW_STATE_LEASE_LOST`: "state lease heartbeat did not become
    /// ready", seen on a loaded machine) is answered so too. Either way the call is sent again
    /// within the call's timeout: both methods are idempotent (an agent already there, or already
    /// gone, is success).
    async fn mutate(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let t0 = Instant::now();
        loop {
            let left = MUTATION_TIMEOUT.saturating_sub(t0.elapsed());
            match self.rpc.call(method, params.clone(), left).await {
                Err(e)
                    if (e.message_contains("OPENCLAW_STATE_LEASE_HELD")
                        || e.message_contains("OPENCLAW_STATE_LEASE_LOST"))
                        && t0.elapsed() + LEASE_PAUSE < MUTATION_TIMEOUT =>
                {
                    tracing::debug!("{method}: {e}; waiting for the lease");
                    tokio::time::sleep(LEASE_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// `agents.create`; an agent that already exists is success. Returns the id the gateway gave it.
    pub async fn create_agent(&self, id: &str, workspace: &Path) -> Result<String, RpcError> {
        match self.mutate("agents.create", json!({"name": id, "workspace": workspace})).await {
            Ok(v) => Ok(v["agentId"].as_str().unwrap_or(id).to_string()),
            Err(e) if e.message_contains("already exists") => Ok(id.to_string()),
            Err(e) => Err(e),
        }
    }

    /// `agents.delete` with its files kept; an agent already gone is success.
    pub async fn delete_agent(&self, id: &str) -> Result<(), RpcError> {
        match self.mutate("agents.delete", json!({"agentId": id, "deleteFiles": false})).await {
            Ok(_) => Ok(()),
            Err(e) if e.message_contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn file(&self, agent: &str, name: &str) -> Result<FileState, RpcError> {
        let got = self.rpc.req("agents.files.get", json!({"agentId": agent, "name": name})).await?;
        let file = &got["file"];
        Ok(if file["missing"] == true {
            FileState::Missing
        } else {
            FileState::Present { hash: file["hash"].as_str().unwrap_or_default().to_string() }
        })
    }

    /// `agents.files.set`; with `expected_hash` a compare-and-swap (a file edited since it was read
    /// is not clobbered silently).
    pub async fn set_file(
        &self,
        agent: &str,
        name: &str,
        content: &str,
        expected_hash: Option<&str>,
    ) -> Result<(), RpcError> {
        let mut params = json!({"agentId": agent, "name": name, "content": content});
        if let Some(h) = expected_hash {
            params["expectedHash"] = json!(h);
        }
        self.rpc.req("agents.files.set", params).await.map(drop)
    }

    /// The config's current hash (`config.get`). As patient as the patch that follows it: a
    /// gateway busy with agent deletions (each a config rewrite and reload) answered a read after
    /// more than 25 s on a loaded 2-core machine, and a destroy failed on it.
    pub async fn config_hash(&self) -> Result<String, RpcError> {
        let got = self.rpc.call("config.get", json!({}), PATCH_TIMEOUT).await?;
        Ok(got["hash"].as_str().unwrap_or_default().to_string())
    }

    /// `config.get` for the base hash, then `config.patch`: re-read and sent again when the config
    /// moved underneath (twice at most), and after the wait the gateway names when its rate limit
    /// (30 patches per 60 s) is hit. `say` hears about each retry.
    pub async fn patch_config(
        &self,
        raw: &Value,
        replace: &[String],
        note: &str,
        say: &(dyn Fn(&str) + Sync),
    ) -> Result<PatchOutcome, RpcError> {
        let mut moved = 0;
        let mut limited = 0;
        loop {
            let base = self.config_hash().await?;
            let params = json!({"raw": raw.to_string(), "baseHash": base, "replacePaths": replace, "note": note});
            match self.rpc.call("config.patch", params, PATCH_TIMEOUT).await {
                Err(e) if e.message_contains("config changed since last load") => {
                    if moved == 2 {
                        return Ok(PatchOutcome::Conflict);
                    }
                    moved += 1;
                    say("the config moved underneath; re-reading it");
                }
                Err(e) if rate_limit_wait(&e).is_some() && limited < 3 => {
                    limited += 1;
                    let wait = rate_limit_wait(&e).unwrap_or_default();
                    say(&format!("config.patch rate limit: waiting {} s", wait.as_secs()));
                    tokio::time::sleep(wait).await;
                }
                // The change is in; OpenClaw restarts itself to finish applying it (seen when a
                // reload raced its cron monitor).
                Err(e) if e.message_contains("config.patch persisted") => {
                    say("persisted; the gateway restarts itself to finish applying it");
                    return Ok(PatchOutcome::Restarting);
                }
                Err(e) => return Err(e),
                Ok(v) if v.pointer("/sentinel/payload/stats/requiresRestart") == Some(&json!(true)) => {
                    return Ok(PatchOutcome::Restarting)
                }
                Ok(v) => {
                    return Ok(PatchOutcome::Applied { noop: v["noop"] == true, changed: v["changedPaths"].clone() })
                }
            }
        }
    }

    /// Sends `message` to the agent's main session and waits for the run's terminal state: the
    /// final reply text, or the run's error.
    pub async fn chat(&self, agent_id: &str, message: &str, timeout: Duration) -> miette::Result<String> {
        let reply = self.chat_keyed(agent_id, message, &run_id(), timeout).await?;
        Ok(reply.unwrap_or_default())
    }

    /// Whether the agent's main session already holds a message sent with an idempotency key that
    /// starts with `key` (the gateway keeps it with each user message, as `<key>:user`, across
    /// restarts; retries of one message use `<key>-N`).
    pub async fn holds_message(&self, agent_id: &str, key: &str) -> Result<bool, RpcError> {
        let params = json!({"sessionKey": format!("agent:{agent_id}:main"), "agentId": agent_id, "limit": 1000});
        let v = self.rpc.req("chat.history", params).await?;
        Ok(v["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["idempotencyKey"].as_str().is_some_and(|k| k.starts_with(key)))))
    }

    /// `chat.send` into a session with the idempotency key `key`: true when a run started, false
    /// when the gateway knew the key already (it runs nothing twice).
    pub async fn send(&self, agent_id: &str, session: &str, message: &str, key: &str) -> Result<bool, RpcError> {
        let params = json!({"sessionKey": session, "agentId": agent_id, "message": message, "idempotencyKey": key});
        Ok(self.rpc.req("chat.send", params).await?["status"] == "started")
    }

    /// The last messages of a session, oldest first (`chat.history`).
    pub async fn history(&self, agent_id: &str, session: &str, limit: usize) -> Result<Vec<Value>, RpcError> {
        let v =
            self.rpc.req("chat.history", json!({"sessionKey": session, "agentId": agent_id, "limit": limit})).await?;
        Ok(v["messages"].as_array().cloned().unwrap_or_default())
    }

    pub fn is_closed(&self) -> bool {
        self.rpc.is_closed()
    }

    /// `agent.wait`: how a run ended (`ok`, `error`, or `timeout` when it did not end in time or the
    /// gateway does not know it).
    pub async fn wait_run(&self, run_id: &str, timeout: Duration) -> miette::Result<String> {
        let params = json!({"runId": run_id, "timeoutMs": timeout.as_millis() as u64});
        let v = self.rpc.call("agent.wait", params, timeout + Duration::from_secs(5)).await.wrap_err("agent.wait")?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Sends `message` with the idempotency key `key` and waits for the run's terminal state. None: the
    /// gateway knew the key already (it runs nothing twice and answers `status: "ok"`).
    pub async fn chat_keyed(
        &self,
        agent_id: &str,
        message: &str,
        key: &str,
        timeout: Duration,
    ) -> miette::Result<Option<String>> {
        let mut events = self.events();
        let params = json!({"sessionKey": format!("agent:{agent_id}:main"), "agentId": agent_id,
            "message": message, "idempotencyKey": key});
        let sent = self.rpc.req("chat.send", params).await.wrap_err_with(|| format!("gateway {}", self.name))?;
        if sent["status"] != "started" {
            return Ok(None);
        }
        let t0 = Instant::now();
        let late = || miette!("no reply from {agent_id} within {} s", timeout.as_secs());
        loop {
            let left = timeout.checked_sub(t0.elapsed()).ok_or_else(late)?;
            let ev = match tokio::time::timeout(left, events.recv()).await {
                Err(_) => return Err(late()),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return Err(miette!("the gateway closed the connection")),
                Ok(Ok(ev)) => ev,
            };
            if ev.name != "chat" || ev.payload["runId"] != key {
                continue;
            }
            match terminal(&ev.payload) {
                Some(Terminal::Reply(text)) => return Ok(Some(text)),
                Some(Terminal::Failed(why)) => return Err(miette!("{agent_id}: {why}")),
                None => {}
            }
        }
    }
}

/// How a run ended, as its `chat` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// `final`: the reply's text.
    Reply(String),
    /// `error` or `aborted`: why.
    Failed(String),
}

/// The text of a message's `content` (a string, or parts with `text`).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// The terminal state a `chat` event payload carries, if it is one.
pub fn terminal(payload: &Value) -> Option<Terminal> {
    match payload["state"].as_str()? {
        "final" => Some(Terminal::Reply(content_text(&payload["message"]["content"]))),
        "error" => Some(Terminal::Failed(payload["errorMessage"].as_str().unwrap_or("the run failed").to_string())),
        "aborted" => Some(Terminal::Failed(format!(
            "the run was aborted ({})",
            payload["stopReason"].as_str().unwrap_or("no reason given")
        ))),
        _ => None,
    }
}

/// In a session's history (oldest first): how the run of the user message sent with idempotency
/// key `key` ended — the assistant's reply after it, or the failure OpenClaw recorded — or None
/// when the session does not hold it yet (or holds no answer yet).
pub fn answer_in_history(messages: &[Value], key: &str) -> Option<Terminal> {
    let user_key = format!("{key}:user");
    let at = messages.iter().position(|m| m["idempotencyKey"].as_str() == Some(user_key.as_str()))?;
    for m in &messages[at + 1..] {
        match m["role"].as_str() {
            Some("assistant") => {
                let text = content_text(&m["content"]);
                if !text.is_empty() || m["stopReason"].as_str() == Some("stop") {
                    return Some(Terminal::Reply(text));
                }
            }
            Some("custom") if m["customType"].as_str().is_some_and(|t| t.starts_with("run-failed")) => {
                return Some(Terminal::Failed(
                    m["content"].as_str().map(str::to_string).unwrap_or_else(|| "the run failed".into()),
                ))
            }
            Some("user") => return None,
            _ => {}
        }
    }
    None
}

/// The session a conversation thread of an agent lives in: `main` is the agent's main session.
pub fn thread_session(agent_id: &str, thread: &str) -> String {
    if thread == "main" {
        format!("agent:{agent_id}:main")
    } else {
        format!("agent:{agent_id}:thread-{thread}")
    }
}

/// The idempotency key of a message that must reach an agent once (a wake): the same agent and
/// text always give the same key, so a re-run after a crash is recognised by the gateway.
pub fn once_key(agent_id: &str, message: &str) -> String {
    let digest = crate::fsutil::sha256_hex(format!("fleet-once\0{agent_id}\0{message}").as_bytes());
    format!("fleet-{}", &digest[..32])
}

/// A fresh idempotency key / run id.
pub fn run_id() -> String {
    crate::fsutil::random_hex(16)
}

/// "rate limit exceeded for config.patch; retry after 22s" → 22 s (capped at a minute).
fn rate_limit_wait(e: &RpcError) -> Option<Duration> {
    let RpcError::Remote { message, .. } = e else { return None };
    let rest = message.split("rate limit exceeded").nth(1)?.split("retry after ").nth(1)?;
    let secs: u64 = rest.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    Some(Duration::from_secs(secs.clamp(1, 60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_once_key_depends_on_the_agent_and_the_text_only() {
        assert_eq!(once_key("alice", "hi"), once_key("alice", "hi"));
        assert_ne!(once_key("alice", "hi"), once_key("bob", "hi"));
        assert_ne!(once_key("alice", "hi"), once_key("alice", "hi!"));
        assert!(once_key("alice", "hi").starts_with("fleet-"));
    }

    #[test]
    fn a_run_ends_as_its_chat_event_says() {
        let fin = json!({"state": "final", "message": {"content": [{"type": "text", "text": "Hel"}, {"text": "lo"}]}});
        assert_eq!(terminal(&fin), Some(Terminal::Reply("Hello".into())));
        let err = json!({"state": "error", "errorMessage": "HTTP 401"});
        assert_eq!(terminal(&err), Some(Terminal::Failed("HTTP 401".into())));
        assert!(matches!(terminal(&json!({"state": "aborted"})), Some(Terminal::Failed(_))));
        assert_eq!(terminal(&json!({"state": "delta"})), None);
    }

    #[test]
    fn the_answer_to_a_message_is_found_in_the_history() {
        let h = vec![
            json!({"role": "user", "content": "a", "idempotencyKey": "k1:user"}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "A"}], "stopReason": "stop"}),
            json!({"role": "user", "content": "b", "idempotencyKey": "k2:user"}),
            json!({"role": "custom", "customType": "run-failed-before-reply", "content": "provider down"}),
            json!({"role": "user", "content": "c", "idempotencyKey": "k3:user"}),
        ];
        assert_eq!(answer_in_history(&h, "k1"), Some(Terminal::Reply("A".into())));
        assert_eq!(answer_in_history(&h, "k2"), Some(Terminal::Failed("provider down".into())));
        assert_eq!(answer_in_history(&h, "k3"), None, "no answer yet");
        assert_eq!(answer_in_history(&h, "k4"), None, "never received");
        assert_eq!(thread_session("alice", "main"), "agent:alice:main");
        assert_eq!(thread_session("alice", "ops-1"), "agent:alice:thread-ops-1");
    }

    #[test]
    fn the_rate_limit_says_how_long_to_wait() {
        let e = |m: &str| RpcError::Remote {
            method: "config.patch".into(),
            code: "UNAVAILABLE".into(),
            message: m.into(),
            details: Value::Null,
        };
        let wait = rate_limit_wait(&e("rate limit exceeded for config.patch; retry after 22s"));
        assert_eq!(wait, Some(Duration::from_secs(22)));
        assert_eq!(
            rate_limit_wait(&e("rate limit exceeded for config.patch; retry after 300s")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(rate_limit_wait(&e("Error: Config write rejected: openclaw.json (size-drop:2102->1017)")), None);
    }
}
