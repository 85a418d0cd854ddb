//! What each trace sender may post (issue 24): the proxy's callback posts what the proxy saw
//! (`llm_call`, and `error` for a call it refused) from `litellm`; a gateway's plugin posts what its
//! gateway emits, from `openclaw` (its agents only: `App::trace_dir`); an agent's own token posts
//! what an agent may report of itself — never a call the proxy priced, never a lifecycle event
//! (heartbeats) — under a source name of its own, not one of fleet's; the admin token anything.
//! And no event from the far future (a heartbeat dated 2099 would keep an agent "alive" for good).
//! Pure.

use super::auth::Principal;
use crate::trace::envelope::Envelope;

/// The sources fleet's own senders name (`backend_name`).
const FLEETS_SOURCES: [&str; 3] = ["litellm", "openclaw", "fleet"];

/// How far ahead of the daemon's clock an event may be dated.
pub const FUTURE_MAX_MS: i64 = 5 * 60_000;

/// Why `who` may not post `e` (None: it may).
pub fn refusal(who: &Principal, e: &Envelope) -> Option<String> {
    let source = e.backend_name.as_deref().unwrap_or("");
    match who {
        Principal::Admin => None,
        Principal::Callback => (source != "litellm" || !matches!(e.kind.as_str(), "llm_call" | "error")).then(|| {
            format!(
                "the proxy's callback posts `llm_call` and `error` events from `litellm`, not {:?} from {source:?}",
                e.kind
            )
        }),
        Principal::Gateway(g) => (source != "openclaw")
            .then(|| format!("gateway {g}'s plugin posts events from `openclaw`, not from {source:?}")),
        Principal::Agent(a) => {
            if matches!(e.kind.as_str(), "llm_call" | "lifecycle") {
                Some(format!(
                    "an agent's token may not post {:?} events (the proxy and fleet report those of {a})",
                    e.kind
                ))
            } else if FLEETS_SOURCES.contains(&source) {
                Some(format!("an agent's token may not post events as {source:?}: that source is fleet's"))
            } else {
                None
            }
        }
    }
}

/// Why an event dated `at_ms` is refused at `now_ms` (None: its time is fine).
pub fn too_far_ahead(at_ms: i64, now_ms: i64) -> Option<String> {
    (at_ms > now_ms + FUTURE_MAX_MS).then(|| {
        format!(
            "created_at is {} s ahead of the daemon's clock (at most {} s)",
            (at_ms - now_ms) / 1000,
            FUTURE_MAX_MS / 1000
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, source: &str) -> Envelope {
        Envelope::new("x".into(), kind, "bob", "2026-12-07T00:00:00Z".into(), source, serde_json::json!({}))
    }

    #[test]
    fn each_sender_posts_only_what_it_produces() {
        let (cb, gw, bob, admin) =
            (Principal::Callback, Principal::Gateway("g".into()), Principal::Agent("bob".into()), Principal::Admin);
        assert_eq!(refusal(&cb, &ev("llm_call", "litellm")), None);
        assert_eq!(refusal(&cb, &ev("error", "litellm")), None);
        assert!(refusal(&cb, &ev("lifecycle", "litellm")).is_some());
        assert!(refusal(&cb, &ev("llm_call", "openclaw")).is_some());
        assert_eq!(refusal(&gw, &ev("lifecycle", "openclaw")), None);
        assert_eq!(refusal(&gw, &ev("llm_call", "openclaw")), None, "the plugin's own view of a call (unpriced)");
        assert!(refusal(&gw, &ev("llm_call", "litellm")).is_some(), "a gateway never posts a priced call");
        assert_eq!(refusal(&bob, &ev("tool_call", "my-harness")), None);
        assert!(refusal(&bob, &ev("llm_call", "my-harness")).is_some());
        assert!(refusal(&bob, &ev("lifecycle", "my-harness")).is_some(), "no heartbeats from an agent");
        assert!(refusal(&bob, &ev("message_out", "openclaw")).is_some());
        assert_eq!(refusal(&admin, &ev("llm_call", "litellm")), None);
    }

    #[test]
    fn the_far_future_is_refused_the_near_one_is_not() {
        assert_eq!(too_far_ahead(1_000 + FUTURE_MAX_MS, 1_000), None);
        assert!(too_far_ahead(1_001 + FUTURE_MAX_MS, 1_000).is_some());
        assert_eq!(too_far_ahead(0, 1_000_000), None, "the past is the late file's business");
    }
}
