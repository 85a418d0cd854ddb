//! Whether each gateway is healthy and lists its agents (asked every few seconds over the shared
//! connection), and from that each agent's status. The status rules are pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::view::AgentView;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayHealth {
    pub healthy: bool,
    pub listed: Vec<String>,
    pub version: String,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub checked_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Applied; no first turn yet.
    Provisioning,
    /// Its gateway is healthy and lists it, and it has had its first turn.
    Online,
    /// Its gateway is down, or does not list it.
    Offline,
}

/// An agent's status from its gateway's health and whether it has had a turn (its wake, or a
/// reply through the daemon).
pub fn agent_status(gw: Option<&GatewayHealth>, agent: &AgentView, replied: bool) -> AgentStatus {
    match gw {
        Some(h) if h.healthy && h.listed.contains(&agent.name) => {
            if agent.woken || replied {
                AgentStatus::Online
            } else {
                AgentStatus::Provisioning
            }
        }
        _ => AgentStatus::Offline,
    }
}

pub type Health = BTreeMap<String, GatewayHealth>;

/// Why an agent with a heartbeat is silent: no heartbeat run for more than twice its interval
/// (and a minute) since its last one — or, before its first, since apply provisioned or woke it.
/// None: not overdue, no heartbeat, or nothing to judge by.
pub fn heartbeat_overdue(
    every: Option<&str>,
    last_ms: Option<i64>,
    since_ms: Option<i64>,
    now_ms: i64,
) -> Option<String> {
    let secs = crate::fleetfile::decode::parse_duration(every?)? as i64;
    let from = last_ms.or(since_ms)?;
    let quiet = now_ms - from;
    (quiet > 2 * secs * 1000 + 60_000).then(|| {
        let what = if last_ms.is_some() { "no heartbeat run" } else { "no heartbeat run yet" };
        format!("{what} for {} min (every {})", quiet / 60_000, every.unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openclaw::client::GatewayRef;

    fn agent(woken: bool) -> AgentView {
        AgentView {
            name: "alice".into(),
            gateway: "main".into(),
            model: "m".into(),
            heartbeat: None,
            woken,
            gref: GatewayRef { name: "main".into(), url: "ws://x".into(), token_file: "/t".into() },
        }
    }

    #[test]
    fn a_heartbeat_is_overdue_after_twice_its_interval() {
        let min = 60_000;
        assert_eq!(heartbeat_overdue(Some("30m"), Some(0), None, 60 * min), None);
        assert!(heartbeat_overdue(Some("30m"), Some(0), None, 62 * min).unwrap().contains("62 min"));
        assert!(heartbeat_overdue(Some("30m"), None, Some(0), 62 * min).unwrap().contains("yet"));
        assert_eq!(heartbeat_overdue(None, Some(0), None, 999 * min), None, "no heartbeat, no judgement");
        assert_eq!(heartbeat_overdue(Some("30m"), None, None, 999 * min), None, "nothing to judge by");
        assert_eq!(heartbeat_overdue(Some("30m"), Some(62 * min), Some(0), 63 * min), None, "the last run counts");
    }

    #[test]
    fn status_follows_the_gateway_and_the_first_turn() {
        let up = GatewayHealth { healthy: true, listed: vec!["alice".into()], ..Default::default() };
        let empty = GatewayHealth { healthy: true, listed: vec![], ..Default::default() };
        let down = GatewayHealth { healthy: false, listed: vec!["alice".into()], ..Default::default() };
        assert_eq!(agent_status(Some(&up), &agent(true), false), AgentStatus::Online);
        assert_eq!(agent_status(Some(&up), &agent(false), false), AgentStatus::Provisioning);
        assert_eq!(agent_status(Some(&up), &agent(false), true), AgentStatus::Online);
        assert_eq!(agent_status(Some(&empty), &agent(true), true), AgentStatus::Offline);
        assert_eq!(agent_status(Some(&down), &agent(true), true), AgentStatus::Offline);
        assert_eq!(agent_status(None, &agent(true), true), AgentStatus::Offline);
    }
}
