//! A trace query: filters, order, page size and the cursor that continues a page. Pure.

/// Newest first (the default: "what happened last"), or oldest first (following a trace live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

pub const LIMIT_DEFAULT: usize = 100;
pub const LIMIT_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Any of these kinds (empty: all).
    pub kinds: Vec<String>,
    /// `created_at` ≥ since (ms).
    pub since: Option<i64>,
    /// `created_at` < until (ms).
    pub until: Option<i64>,
    pub thread: Option<String>,
    pub trace_id: Option<String>,
    /// Only events of this channel (`heartbeat`, `webchat`, `apply`, …).
    pub channel: Option<String>,
    pub limit: usize,
    pub order: Order,
    /// Continue after this (ms, id), in `order`.
    pub after: Option<(i64, String)>,
}

/// `s` as UTC milliseconds: an RFC 3339 time, or a duration back from `now_ms` (`90s`, `15m`, `1h`,
/// `2d`) — what `since`/`until` take in the API and the CLI. None: neither.
pub fn instant_or_ago(s: &str, now_ms: i64) -> Option<i64> {
    crate::clock::parse_rfc3339_ms(s)
        .or_else(|| crate::fleetfile::decode::parse_duration(s).map(|secs| now_ms - secs as i64 * 1000))
}

/// The cursor of the last event of a page: opaque to clients (`<ms>-<hex id>`).
pub fn cursor_of(ms: i64, id: &str) -> String {
    format!("{ms}-{}", hex::encode(id.as_bytes()))
}

pub fn parse_cursor(s: &str) -> Option<(i64, String)> {
    let (ms, id) = s.split_once('-')?;
    let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    Some((ms.parse().ok()?, id))
}

impl Query {
    /// Whether (ms, id) comes after the cursor in this query's order.
    pub fn past_cursor(&self, ms: i64, id: &str) -> bool {
        match (&self.after, self.order) {
            (None, _) => true,
            (Some((cm, cid)), Order::Asc) => (ms, id) > (*cm, cid.as_str()),
            (Some((cm, cid)), Order::Desc) => (ms, id) < (*cm, cid.as_str()),
        }
    }

    /// Whether an event passes the filters (cursor included).
    pub fn matches(&self, ms: i64, e: &super::envelope::Envelope) -> bool {
        let (id, kind, thread, trace) = (e.id.as_str(), e.kind.as_str(), e.thread_id.as_deref(), e.trace_id.as_deref());
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.channel.as_deref().is_none_or(|c| e.channel_id.as_deref() == Some(c))
            && self.since.is_none_or(|s| ms >= s)
            && self.until.is_none_or(|u| ms < u)
            && self.thread.as_deref().is_none_or(|t| thread == Some(t))
            && self.trace_id.as_deref().is_none_or(|t| trace == Some(t))
            && self.past_cursor(ms, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_any_id() {
        for id in ["e1", "oc:run-1:tool_call:x/y", "ü-é"] {
            assert_eq!(parse_cursor(&cursor_of(42, id)), Some((42, id.to_string())));
        }
        assert_eq!(parse_cursor("nope"), None);
        assert_eq!(parse_cursor("1-zz"), None);
    }

    #[test]
    fn the_cursor_continues_in_the_query_order() {
        let mut q = Query { after: Some((10, "b".into())), ..Query::default() };
        assert!(q.past_cursor(10, "a") && q.past_cursor(9, "z") && !q.past_cursor(10, "b") && !q.past_cursor(11, "a"));
        q.order = Order::Asc;
        assert!(q.past_cursor(10, "c") && q.past_cursor(11, "a") && !q.past_cursor(10, "b"));
    }

    fn ev(kind: &str, thread: Option<&str>, channel: Option<&str>) -> crate::trace::envelope::Envelope {
        serde_json::from_value(serde_json::json!({"v": 1, "id": "x", "trace_id": null,
            "created_at": "2026-11-29T14:00:00Z", "agent_name": "a", "kind": kind, "thread_id": thread,
            "channel_id": channel}))
        .unwrap()
    }

    #[test]
    fn filters_combine() {
        let q =
            Query { kinds: vec!["tool_call".into()], thread: Some("main".into()), since: Some(5), ..Query::default() };
        assert!(q.matches(5, &ev("tool_call", Some("main"), None)));
        assert!(!q.matches(4, &ev("tool_call", Some("main"), None)));
        assert!(!q.matches(5, &ev("llm_call", Some("main"), None)));
        assert!(!q.matches(5, &ev("tool_call", None, None)));
        let q = Query { channel: Some("heartbeat".into()), ..Query::default() };
        assert!(q.matches(5, &ev("lifecycle", None, Some("heartbeat"))));
        assert!(!q.matches(5, &ev("lifecycle", None, None)));
    }
}
