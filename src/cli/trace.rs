//! `fleet trace AGENT` and `fleet usage`: read the agents' trace stores in the data dir directly
//! (they work while the daemon is down); `--follow` tails a trace as events arrive.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use super::loaded::load;
use crate::trace::envelope::{Envelope, KINDS};
use crate::trace::query::{Order, Query};
use crate::trace::store;

fn since_ms(since: Option<&str>) -> miette::Result<Option<i64>> {
    let Some(s) = since else { return Ok(None) };
    crate::trace::query::instant_or_ago(s, crate::clock::now_ms()).map(Some).ok_or_else(|| {
        miette!(help = "e.g. --since 90s, 15m, 1h, 2d, or 2026-11-29T14:00:00Z", "--since {s:?} is not a time")
    })
}

fn short(s: &str, n: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// One line per event: time, kind, who produced it, what it says.
pub fn line(e: &Envelope) -> String {
    let p = &e.payload;
    let text = |k: &str| p[k].as_str().map(|t| format!("{:?}", short(t, 80))).unwrap_or_default();
    let what = match e.kind.as_str() {
        "message_in" | "message_out" | "reasoning" => text("text"),
        "llm_call" => format!(
            "{} {}→{} tok{}{}",
            e.model.as_deref().unwrap_or("?"),
            e.tokens_in.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            e.tokens_out.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            e.cost_usd.map(|c| format!(" ${c:.4}")).unwrap_or_default(),
            e.duration_ms.map(|d| format!(" {d} ms")).unwrap_or_default(),
        ),
        "tool_call" => format!("{} {}", p["tool"].as_str().unwrap_or("?"), short(&p["args"].to_string(), 80)),
        "tool_result" => format!(
            "{}{} {}",
            p["tool"].as_str().unwrap_or("?"),
            if p["is_error"] == true { " (error)" } else { "" },
            short(&p["result"].to_string(), 80)
        ),
        "lifecycle" => p["phase"].as_str().or(p["event"].as_str()).unwrap_or("").to_string(),
        _ => String::new(),
    };
    let err = e.error.as_deref().map(|x| format!("  error: {}", short(x, 80))).unwrap_or_default();
    format!("{}  {:<11} {:<9} {}{}", e.created_at, e.kind, e.backend_name.as_deref().unwrap_or("-"), what, err)
}

pub struct TraceArgs<'a> {
    pub path: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub agent: &'a str,
    pub kinds: Vec<String>,
    pub since: Option<&'a str>,
    pub limit: usize,
    pub follow: bool,
    pub json: bool,
}

/// `fleet trace AGENT --rejected`: the agent's events the daemon refused for good, from the
/// senders' dead-letter files (the proxy's callback's; each process gateway's plugin's), with why.
pub fn rejected(path: Option<&Path>, data_dir: Option<&Path>, agent: &str, json: bool) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let mut files = vec![l.layout.data_dir.join("litellm").join(crate::trace::rejected::CALLBACK_FILE)];
    files.extend(
        l.spec.gateways.iter().map(|g| l.layout.gateway_home(&g.name.value).join(crate::trace::rejected::PLUGIN_FILE)),
    );
    let found = crate::trace::rejected::read(&files, agent);
    for r in &found {
        match json {
            true => println!("{}", serde_json::to_string(&r.line).unwrap_or_default()),
            false => println!("{}", r.describe()),
        }
    }
    if found.is_empty() && !json {
        println!(
            "no refused events of {agent} (the senders keep them in {})",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn trace(a: TraceArgs) -> miette::Result<ExitCode> {
    let l = load(a.path, a.data_dir)?;
    if !l.spec.agents.iter().any(|x| x.name.value == a.agent) && !l.layout.agent_trace(a.agent).exists() {
        return Err(miette!("no agent {:?} in fleet {}", a.agent, l.spec.name));
    }
    if let Some(k) = a.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(miette!(help = format!("one of {}", KINDS.join(", ")), "--kind {k:?} is not a trace event kind"));
    }
    let dir = l.layout.agent_trace(a.agent);
    // The last `limit` events (newest first from the store), printed oldest first.
    let q = Query { kinds: a.kinds.clone(), since: since_ms(a.since)?, limit: a.limit, ..Query::default() };
    let mut page = store::read(&dir, &q).into_diagnostic()?;
    page.reverse();
    let print = |e: &Envelope| match a.json {
        true => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        false => println!("{}", line(e)),
    };
    // Followed: what arrives, also events that arrive late with an earlier time (a gateway's
    // spool catching up): the last minute is looked at again, each event printed once.
    let mut printed: std::collections::HashSet<String> = page.iter().map(|(_, e)| e.id.clone()).collect();
    for (_, e) in &page {
        print(e);
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut from = page.last().map(|(ms, _)| *ms).unwrap_or_else(crate::clock::now_ms);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let q = Query {
            kinds: a.kinds.clone(),
            since: Some(from - 60_000),
            order: Order::Asc,
            limit: usize::MAX,
            ..Query::default()
        };
        for (ms, e) in store::read(&dir, &q).into_diagnostic()? {
            if printed.insert(e.id.clone()) {
                print(&e);
                from = from.max(ms);
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

/// `--by agent|model|day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Agent,
    Model,
    Day,
}

pub fn usage(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    since: Option<&str>,
    by: By,
    as_json: bool,
) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let since = since_ms(since.or(Some("1d")))?;
    let mut totals: BTreeMap<String, (i64, i64, i64, f64)> = BTreeMap::new();
    for a in &l.spec.agents {
        let name = &a.name.value;
        for r in store::usage(&l.layout.agent_trace(name), since, None).into_diagnostic()? {
            let key = match by {
                By::Agent => name.clone(),
                By::Model => r.model.clone().unwrap_or_else(|| "?".into()),
                By::Day => r.day.clone(),
            };
            let t = totals.entry(key).or_default();
            t.0 += r.calls;
            t.1 += r.tokens_in;
            t.2 += r.tokens_out;
            t.3 += r.cost_usd;
        }
        if by == By::Agent {
            totals.entry(name.clone()).or_default();
        }
    }
    // Budgets as the proxy enforces them: its key file and its spend ledger, now.
    let now = crate::clock::now_ms().div_euclid(1000);
    let budgets = crate::litellm::spend::standings(&l.layout.keys_file(), &l.layout.spend_ledger(), now);
    if as_json {
        let rows: Vec<Value> = totals
            .iter()
            .map(|(k, t)| json!({"key": k, "calls": t.0, "tokens_in": t.1, "tokens_out": t.2, "cost_usd": t.3}))
            .collect();
        let doc = json!({"by": format!("{by:?}").to_lowercase(), "rows": rows, "budgets": budgets});
        println!("{}", serde_json::to_string_pretty(&doc).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    let head = format!("{by:?}").to_uppercase();
    println!("{head:<20} {:>7} {:>11} {:>11} {:>10}", "CALLS", "TOKENS IN", "TOKENS OUT", "COST");
    let mut all = (0, 0, 0, 0.0);
    for (k, t) in &totals {
        println!("{k:<20} {:>7} {:>11} {:>11} {:>10}", t.0, t.1, t.2, format!("${:.4}", t.3));
        all = (all.0 + t.0, all.1 + t.1, all.2 + t.2, all.3 + t.3);
    }
    println!("{:<20} {:>7} {:>11} {:>11} {:>10}", "total", all.0, all.1, all.2, format!("${:.4}", all.3));
    if !budgets.is_empty() {
        println!("\n{:<20} {:>10} {:>10} {:<28} STATE", "BUDGET", "SPENT", "OF", "WINDOW");
        for (agent, s) in &budgets {
            let state = match &s.message {
                Some(_) => format!("refused until it resets {}", s.resets),
                None => format!("{:.0}% used", 100.0 * s.spent_usd / s.budget_usd),
            };
            let (spent, of) = (crate::litellm::spend::usd(s.spent_usd), crate::litellm::spend::usd(s.budget_usd));
            println!("{agent:<20} {spent:>10} {of:>10} {:<28} {state}", s.window);
        }
    }
    Ok(ExitCode::SUCCESS)
}
