//! An agent's spend against its budget, as fleet's auth module judges it: the ledger the proxy's
//! spend callback appends (`spend.jsonl` beside the key file, one line per priced call) summed over
//! the budget's UTC window. The same rule as `fleet_auth.py`: refused once the window's spend, plus
//! what the agent's last call cost, would pass the budget. Read by `fleet usage`, the daemon's
//! usage endpoint and status page, and the router's system message for a refused chat.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clock::{days_from_civil, format_rfc3339};

/// A key's `budget` metadata: `{"usd": 5, "per": "day"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub usd: f64,
    pub per: Per,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Hour,
    Day,
    Week,
    Month,
}

/// A budget window: where it starts and ends (UTC seconds) and how people name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    /// `2026-11-29`, `2026-11`, `the week of 2026-11-23`, `2026-11-29 20:00-21:00 UTC`.
    pub label: String,
    /// `at 00:00 UTC`, `on 2026-12-01 at 00:00 UTC`.
    pub resets: String,
}

fn civil(secs: i64) -> (i64, i64, i64) {
    let s = format_rfc3339(secs);
    (s[0..4].parse().unwrap_or(1970), s[5..7].parse().unwrap_or(1), s[8..10].parse().unwrap_or(1))
}

fn date(secs: i64) -> String {
    format_rfc3339(secs)[..10].to_string()
}

/// The window of `per` holding `now` (UTC seconds).
pub fn window(per: Per, now: i64) -> Window {
    let day = now.div_euclid(86_400) * 86_400;
    match per {
        Per::Hour => {
            let start = now.div_euclid(3600) * 3600;
            let hh = |t: i64| format_rfc3339(t)[11..13].to_string();
            Window {
                start,
                end: start + 3600,
                label: format!("{} {}:00-{}:00 UTC", date(start), hh(start), hh(start + 3600)),
                resets: format!("at {}:00 UTC", hh(start + 3600)),
            }
        }
        Per::Day => Window { start: day, end: day + 86_400, label: date(day), resets: "at 00:00 UTC".into() },
        Per::Week => {
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            let days = day / 86_400;
            let start = (days - (days + 3).rem_euclid(7)) * 86_400;
            let end = start + 7 * 86_400;
            Window {
                start,
                end,
                label: format!("the week of {}", date(start)),
                resets: format!("on {} (Monday) at 00:00 UTC", date(end)),
            }
        }
        Per::Month => {
            let (y, m, _) = civil(now);
            let start = days_from_civil(y, m, 1) * 86_400;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) * 86_400;
            Window { start, end, label: format!("{y:04}-{m:02}"), resets: format!("on {} at 00:00 UTC", date(end)) }
        }
    }
}

/// `$5.00`, `$0.01`, `$0.008`: cents, or more digits when cents would hide the amount.
pub fn usd(x: f64) -> String {
    let cents = format!("{x:.2}");
    if (cents.parse::<f64>().unwrap_or(x) - x).abs() > 1e-9 {
        let s = format!("{x:.6}");
        format!("${}", s.trim_end_matches('0'))
    } else {
        format!("${cents}")
    }
}

/// One ledger line.
#[derive(Debug, Clone, Deserialize)]
struct Line {
    id: Option<String>,
    agent: String,
    usd: f64,
    at: f64,
}

/// What the ledger says of one agent: spend per call, oldest first, as (UTC seconds, USD); a call
/// written twice (same id) counts once, torn or foreign lines not at all.
pub fn calls_in(ledger: &str, agent: &str) -> Vec<(f64, f64)> {
    let mut seen = std::collections::HashSet::new();
    ledger
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.agent == agent && l.usd.is_finite() && l.usd >= 0.0)
        .filter(|l| l.id.as_ref().is_none_or(|id| seen.insert(id.clone())))
        .map(|l| (l.at, l.usd))
        .collect()
}

/// An agent's standing against its budget now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub budget_usd: f64,
    pub per: Per,
    pub window: String,
    pub window_start: String,
    pub resets: String,
    pub spent_usd: f64,
    /// What its latest call in this window cost (the auth module's estimate of the next one).
    pub last_call_usd: f64,
    /// Whether the auth module refuses its next call.
    pub refused: bool,
    /// The auth module's words when it refuses.
    pub message: Option<String>,
}

/// The same judgement as `fleet_auth._check_budget`.
pub fn standing(agent: &str, budget: Budget, calls: &[(f64, f64)], now: i64) -> Standing {
    let w = window(budget.per, now);
    // The auth module sums whole hours from the window's start: so does this.
    let in_window: Vec<&(f64, f64)> =
        calls.iter().filter(|(at, _)| (*at as i64).div_euclid(3600) * 3600 >= w.start).collect();
    let spent: f64 = in_window.iter().map(|c| c.1).sum();
    // The estimate of the next call is the window's latest one: the first call of a window always
    // goes through (a call dearer than the whole budget must not lock the agent out for good).
    let last = in_window.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(|c| c.1).unwrap_or(0.0);
    let eps = 1e-12;
    let message = if spent + eps >= budget.usd {
        Some(format!(
            "Out of budget: {agent} has spent {} of {} for {}; resets {}",
            usd(spent),
            usd(budget.usd),
            w.label,
            w.resets
        ))
    } else if spent + last > budget.usd + eps {
        Some(format!(
            "Out of budget: {agent} has spent {} of {} for {}, and its next call (about {}, as its last) would pass it; resets {}",
            usd(spent),
            usd(budget.usd),
            w.label,
            usd(last),
            w.resets
        ))
    } else {
        None
    };
    Standing {
        budget_usd: budget.usd,
        per: budget.per,
        window: w.label,
        window_start: format_rfc3339(w.start),
        resets: w.resets,
        spent_usd: spent,
        last_call_usd: last,
        refused: message.is_some(),
        message,
    }
}

/// The ledger of a data dir's proxy (empty when nothing was spent yet). Blocking.
pub fn read_ledger(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A key's budget, from its metadata.
pub fn budget_of(metadata: &std::collections::BTreeMap<String, serde_json::Value>) -> Option<Budget> {
    serde_json::from_value(metadata.get("budget")?.clone()).ok()
}

/// Every agent's budget, from the key file the auth module enforces (an unreadable or absent file:
/// none). Blocking.
pub fn budgets(keys_file: &Path) -> std::collections::BTreeMap<String, Budget> {
    let Ok(file) = super::keyfile::KeyFile::load(keys_file) else { return Default::default() };
    file.aliases()
        .into_iter()
        .filter_map(|alias| {
            let e = file.get(&alias)?;
            let agent = e.metadata.get("agent").and_then(|a| a.as_str()).map(str::to_string)?;
            Some((agent, budget_of(&e.metadata)?))
        })
        .collect()
}

/// Each budgeted agent's standing now, from a data dir's key file and ledger. Blocking.
pub fn standings(keys_file: &Path, ledger: &Path, now: i64) -> std::collections::BTreeMap<String, Standing> {
    let budgets = budgets(keys_file);
    if budgets.is_empty() {
        return Default::default();
    }
    let text = read_ledger(ledger);
    budgets.into_iter().map(|(a, b)| (a.clone(), standing(&a, b, &calls_in(&text, &a), now))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-29T20:15:00Z, a Sunday.
    const NOW: i64 = 1_795_983_300;

    #[test]
    fn windows_are_utc_and_named_as_people_say_them() {
        assert_eq!(format_rfc3339(NOW), "2026-11-29T20:15:00Z");
        let d = window(Per::Day, NOW);
        assert_eq!(
            (format_rfc3339(d.start).as_str(), d.label.as_str(), d.resets.as_str()),
            ("2026-11-29T00:00:00Z", "2026-11-29", "at 00:00 UTC")
        );
        let h = window(Per::Hour, NOW);
        assert_eq!((h.label.as_str(), h.resets.as_str()), ("2026-11-29 20:00-21:00 UTC", "at 21:00 UTC"));
        let w = window(Per::Week, NOW);
        assert_eq!(
            (format_rfc3339(w.start).as_str(), w.resets.as_str()),
            ("2026-11-23T00:00:00Z", "on 2026-11-30 (Monday) at 00:00 UTC")
        );
        let m = window(Per::Month, NOW);
        assert_eq!(
            (format_rfc3339(m.start).as_str(), m.label.as_str(), m.resets.as_str()),
            ("2026-11-01T00:00:00Z", "2026-11", "on 2026-12-01 at 00:00 UTC")
        );
        let dec = window(Per::Month, NOW + 5 * 86_400);
        assert_eq!(dec.resets, "on 2027-01-01 at 00:00 UTC");
    }

    #[test]
    fn amounts_show_cents_or_the_digits_cents_would_hide() {
        assert_eq!(
            (usd(5.0).as_str(), usd(0.01).as_str(), usd(0.008).as_str(), usd(0.7533).as_str()),
            ("$5.00", "$0.01", "$0.008", "$0.7533")
        );
    }

    #[test]
    fn the_next_call_is_refused_once_spend_plus_the_last_call_would_pass_the_budget() {
        let b = Budget { usd: 0.01, per: Per::Day };
        let at = NOW as f64;
        let ledger = format!(
            "{{\"id\":\"a\",\"agent\":\"alice\",\"usd\":0.004,\"at\":{at}}}\n{{\"id\":\"a\",\"agent\":\"alice\",\"usd\":0.004,\"at\":{at}}}\n{{\"id\":\"y\",\"agent\":\"alice\",\"usd\":9,\"at\":{}}}\n{{\"id\":\"b\",\"agent\":\"bob\",\"usd\":1,\"at\":{at}}}\ntorn{{",
            at - 86_400.0
        );
        let calls = calls_in(&ledger, "alice");
        assert_eq!(calls.len(), 2, "the duplicate counts once; bob's and torn lines not at all");
        let s = standing("alice", b, &calls, NOW);
        assert_eq!((s.spent_usd, s.refused), (0.004, false), "yesterday's $9 is another window, and no estimate");
        let dear = format!("{{\"id\":\"d\",\"agent\":\"carol\",\"usd\":9,\"at\":{}}}", at - 86_400.0);
        assert!(!standing("carol", b, &calls_in(&dear, "carol"), NOW).refused, "a new window starts afresh");
        let calls =
            calls_in(&format!("{ledger}\n{{\"id\":\"c\",\"agent\":\"alice\",\"usd\":0.004,\"at\":{at}}}"), "alice");
        let s = standing("alice", b, &calls, NOW);
        assert!(s.refused);
        assert_eq!(
            s.message.unwrap(),
            "Out of budget: alice has spent $0.008 of $0.01 for 2026-11-29, and its next call (about $0.004, as its last) would pass it; resets at 00:00 UTC"
        );
    }
}
