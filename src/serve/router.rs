//! Chat routing: a stored user message goes to its agent through the agent's gateway
//! (`chat.send` into the thread's session, idempotency key = the message id), and its answer is
//! stored: the agent's reply, or a `system` message saying why there is none (agent gone,
//! gateway down, the run failed, no reply in time). Never a hang, never nothing. One connection
//! per gateway, shared by every message to it, opened again (with backoff) when it breaks; a
//! message whose wait was cut off asks the gateway how its run ended (`agent.wait`, then the
//! session's history), and a re-send is harmless (the gateway knows the key). On start, every
//! message still pending is delivered this way: nothing acknowledged is dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Mutex};

use super::store::{Message, Messages, Role};
use super::view::FleetView;
use crate::layout::Layout;
use crate::openclaw::client::{answer_in_history, terminal, thread_session, GatewayClient, GatewayRef, Terminal};
use crate::openclaw::rpc::RpcError;
use crate::trace::envelope::Envelope;
use crate::trace::store::Item;
use crate::trace::writer::TraceWriter;

pub struct Router {
    pub messages: Messages,
    pub view: Arc<RwLock<FleetView>>,
    pub events: broadcast::Sender<Message>,
    pub reply_timeout: Duration,
    conns: Mutex<HashMap<String, Arc<GatewayClient>>>,
    /// Where the router's own `message_in`/`message_out`/`error` trace events go.
    traces: Option<(TraceWriter, Layout)>,
}

/// How one attempt at an exchange ended.
enum Attempt {
    Done(Terminal),
    /// The connection broke (after the message reached the gateway, when `sent`): connect again
    /// and ask.
    Broken {
        why: String,
        sent: bool,
    },
    TimedOut,
    /// The gateway turned the message away for now ("The server is busy"): it was not taken; send
    /// it again after a pause.
    Busy(String),
}

impl Router {
    pub fn new(
        messages: Messages,
        view: Arc<RwLock<FleetView>>,
        events: broadcast::Sender<Message>,
        reply_timeout: Duration,
    ) -> Self {
        Router { messages, view, events, reply_timeout, conns: Mutex::new(HashMap::new()), traces: None }
    }

    /// Records the router's side of every turn in the agents' traces.
    pub fn with_traces(mut self, writer: TraceWriter, layout: Layout) -> Self {
        self.traces = Some((writer, layout));
        self
    }

    /// One trace event of a routed message (ids shared with the gateway plugin's, so the two
    /// views of one turn are one event). Best effort: the conversation itself is already stored.
    async fn trace(&self, msg: &Message, kind: &str, suffix: &str, text: &str, error: Option<&str>) {
        let Some((writer, layout)) = &self.traces else { return };
        let root = format!("oc:{}:in", msg.id);
        let id = format!("oc:{}:{suffix}", msg.id);
        let created_at = if kind == "message_in" {
            msg.created_at.clone()
        } else {
            crate::clock::format_rfc3339_ms(crate::clock::now_ms())
        };
        let payload = serde_json::json!({"text": text, "message_id": msg.id, "from": msg.sender});
        let event = Envelope {
            parent_id: (id != root).then(|| root.clone()),
            trace_id: Some(msg.id.clone()),
            channel_id: Some("fleet".into()),
            thread_id: Some(thread_session(&msg.agent, &msg.thread)),
            error: error.map(str::to_string),
            ..Envelope::new(id, kind, &msg.agent, created_at, "fleet", payload)
        };
        let Ok(ms) = event.check() else { return };
        let item = Item { dir: layout.agent_trace(&msg.agent), ms, event };
        if let Err(e) = writer.write(vec![item]).await {
            tracing::warn!("trace of message {}: {e}", msg.id);
        }
    }

    /// The shared connection to a gateway, opened when there is none or it broke.
    pub async fn client(&self, g: &GatewayRef) -> Result<Arc<GatewayClient>, String> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&g.url).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        conns.remove(&g.url);
        match tokio::time::timeout(Duration::from_secs(5), g.connect()).await {
            Ok(Ok(c)) => {
                let c = Arc::new(c);
                conns.insert(g.url.clone(), c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(crate::driver::error_chain(&e)),
            Err(_) => Err(format!("gateway {} did not answer within 5 s", g.name)),
        }
    }

    async fn forget(&self, g: &GatewayRef) {
        self.conns.lock().await.remove(&g.url);
    }

    /// Stores the answer to `msg` and tells every listener (an answer stored before is kept).
    async fn answer(&self, msg: &Message, role: Role, text: String) {
        let id = msg.id.clone();
        let t = text.clone();
        match self.messages.with(move |s| s.answer(&id, role, &t)).await {
            Ok((m, true)) => {
                let _ = self.events.send(m.for_event());
                match role {
                    Role::Agent => self.trace(msg, "message_out", "out", &text, None).await,
                    _ => self.trace(msg, "error", "error", &text, Some("not_answered")).await,
                }
            }
            Ok((_, false)) => {}
            Err(e) => tracing::error!("cannot store the answer to {}: {e}", msg.id),
        }
    }

    /// When the proxy's auth module refuses the agent for its budget now: its words.
    async fn over_budget(&self, agent: &str) -> Option<String> {
        let layout = self.traces.as_ref().map(|(_, l)| l.clone())?;
        let now = crate::clock::now_ms().div_euclid(1000);
        let mut all = tokio::task::spawn_blocking(move || {
            crate::litellm::spend::standings(&layout.keys_file(), &layout.spend_ledger(), now)
        })
        .await
        .ok()?;
        all.remove(agent).and_then(|s| s.message)
    }

    /// Delivers a stored user message and stores its answer, whatever happens.
    pub async fn deliver(self: Arc<Self>, msg: Message) {
        self.trace(&msg, "message_in", "in", &msg.text, None).await;
        // A message waiting for its answer does not hold its text (up to 1 MiB): each attempt reads
        // it back from the store, so pending messages cost memory by their number, not their size.
        let msg = Message { text: String::new(), ..msg };
        let agent = self.view.read().expect("view").agents.get(&msg.agent).cloned();
        let Some(agent) = agent else {
            let text =
                format!("agent {} is not part of this fleet (any more); the message was not delivered", msg.agent);
            return self.answer(&msg, Role::System, text).await;
        };
        let deadline = Instant::now() + self.reply_timeout;
        let session = thread_session(&msg.agent, &msg.thread);
        let mut pause = Duration::from_millis(250);
        let mut last_problem = String::new();
        let mut sent = false;
        loop {
            if Instant::now() >= deadline {
                let text = match last_problem.is_empty() {
                    true => format!("no reply from {} within {} s", msg.agent, self.reply_timeout.as_secs()),
                    false => {
                        format!("no reply from {} within {} s: {last_problem}", msg.agent, self.reply_timeout.as_secs())
                    }
                };
                return self.answer(&msg, Role::System, text).await;
            }
            let c = match self.client(&agent.gref).await {
                Ok(c) => c,
                Err(why) if !sent => {
                    // A gateway that is down is said at once: the user is not left waiting for a
                    // timeout for a message that never left.
                    let text = format!(
                        "{} did not get this message: gateway {} is unreachable ({why})",
                        msg.agent, agent.gateway
                    );
                    return self.answer(&msg, Role::System, text).await;
                }
                Err(why) => {
                    // It has the message (and may be restarting): wait for it within the timeout.
                    last_problem = format!("gateway {} is unreachable ({why})", agent.gateway);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            match self.attempt(&c, &msg, &session, deadline).await {
                Attempt::Done(Terminal::Reply(text)) => return self.answer(&msg, Role::Agent, text).await,
                Attempt::Done(Terminal::Failed(why)) => {
                    let text = match self.over_budget(&msg.agent).await {
                        // OpenClaw words the proxy's refusal as a generic billing error: say fleet's.
                        Some(said) => format!("{}'s run failed: {said}", msg.agent),
                        None => format!("{}'s run failed: {why}", msg.agent),
                    };
                    return self.answer(&msg, Role::System, text).await;
                }
                Attempt::TimedOut => {
                    let text = format!("no reply from {} within {} s", msg.agent, self.reply_timeout.as_secs());
                    return self.answer(&msg, Role::System, text).await;
                }
                Attempt::Busy(why) => {
                    last_problem = format!("gateway {} is busy ({why})", agent.gateway);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Attempt::Broken { why, sent: s } => {
                    sent |= s;
                    last_problem = why;
                    self.forget(&agent.gref).await;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One exchange on one connection: send (or find the message already sent), then wait for the
    /// run's end on the event stream, or — the run started before this connection — by asking.
    async fn attempt(&self, c: &GatewayClient, msg: &Message, session: &str, deadline: Instant) -> Attempt {
        let mut events = c.events();
        let id = msg.id.clone();
        let text = match self.messages.with(move |s| s.by_id(&id)).await {
            Ok(Some(m)) => m.text,
            Ok(None) => return Attempt::Done(Terminal::Failed("the message is no longer stored".into())),
            Err(e) => return Attempt::Broken { why: e.to_string(), sent: false },
        };
        let sent = c.send(&msg.agent, session, &text, &msg.id).await;
        drop(text); // not held while the run goes on
        let started = match sent {
            Ok(s) => s,
            Err(RpcError::Remote { message, code, .. }) if code == "UNAVAILABLE" || message.contains("busy") => {
                return Attempt::Busy(message)
            }
            Err(RpcError::Remote { message, .. }) => {
                return Attempt::Done(Terminal::Failed(format!("the gateway refused the message: {message}")))
            }
            Err(e) => return Attempt::Broken { why: e.to_string(), sent: false },
        };
        if !started {
            return self.ask(c, msg, session, deadline).await;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.recv()).await {
                Err(_) => return Attempt::TimedOut,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return self.ask(c, msg, session, deadline).await,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Attempt::Broken { why: "the gateway closed the connection".into(), sent: true }
                }
                Ok(Ok(ev)) if ev.name == "chat" && ev.payload["runId"] == msg.id.as_str() => {
                    if let Some(t) = terminal(&ev.payload) {
                        return Attempt::Done(t);
                    }
                }
                Ok(Ok(ev)) if ev.name == "shutdown" => {
                    return Attempt::Broken { why: "the gateway is restarting".into(), sent: true }
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// A run this connection did not see start: how it ended, from the session's history, waiting
    /// for it (`agent.wait`) while it has not.
    async fn ask(&self, c: &GatewayClient, msg: &Message, session: &str, deadline: Instant) -> Attempt {
        loop {
            match c.history(&msg.agent, session, 200).await {
                Ok(h) => {
                    if let Some(t) = answer_in_history(&h, &msg.id) {
                        return Attempt::Done(t);
                    }
                }
                Err(e) => return Attempt::Broken { why: e.to_string(), sent: true },
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Attempt::TimedOut;
            }
            let wait = left.min(Duration::from_secs(10));
            if let Err(e) = c.wait_run(&msg.id, wait).await {
                return Attempt::Broken { why: crate::driver::error_chain(&e), sent: true };
            }
        }
    }

    /// Delivers every message still pending (after a restart), each on its own task.
    pub async fn reconcile(self: &Arc<Self>) -> usize {
        let pending = self.messages.with(|s| s.pending()).await.unwrap_or_default();
        let n = pending.len();
        for m in pending {
            tokio::spawn(self.clone().deliver(m));
        }
        n
    }
}
