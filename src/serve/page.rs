//! The status page: server-rendered HTML (assets compiled in, no build step) and a little vanilla
//! JS for the chat pane, fed by the event stream. Signed in at `/login` (`login`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::auth::Principal;
use super::http::App;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

/// The sign-in page (also what `/` shows a browser without a session).
pub fn sign_in(why: &str) -> String {
    shell(
        "fleet — sign in",
        &format!(
            "<main class=\"login\"><h1>fleet</h1><p id=\"why\">{}</p>\
             <form id=\"signin\"><label>Admin token <input id=\"token\" type=\"password\" autocomplete=\"current-password\"></label> \
             <button>Sign in</button></form>\
             <p class=\"dim\">Or open the one-time link <code>fleet status --login</code> prints. The token is in \
             <code>&lt;data dir&gt;/serve/token</code>.</p></main>\
             <script>{SIGN_IN}</script>",
            esc(why)
        ),
    )
}

const SIGN_IN: &str = r#"
async function signIn(body) {
  const r = await fetch('/login', {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body), credentials: 'same-origin'});
  if (r.ok) { location.replace('/'); return; }
  const e = await r.json().catch(() => ({}));
  document.getElementById('why').textContent = (e.error && e.error.message) || ('sign-in failed: ' + r.status);
}
const code = new URLSearchParams(location.hash.slice(1)).get('code');
if (code) { history.replaceState(null, '', location.pathname); signIn({code}); }
document.getElementById('signin').addEventListener('submit', ev => { ev.preventDefault(); signIn({token: document.getElementById('token').value}); });
"#;

pub async fn page(
    State(app): State<std::sync::Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.contains_key("token") {
        // The old login link: the admin token does not go into a URL (logs, history, Referer).
        let why =
            "The admin token no longer goes in a URL: sign in below, or open the link `fleet status --login` prints.";
        return (StatusCode::BAD_REQUEST, Html(sign_in(why))).into_response();
    }
    match app.principal(&headers).await {
        Ok(Principal::Admin) => {}
        _ => return (StatusCode::UNAUTHORIZED, Html(sign_in("Sign in to see this fleet."))).into_response(),
    }
    let agents = app.agents_json(&Principal::Admin).await.unwrap_or_default();
    let view = app.router.view.read().expect("view").clone();
    let health = app.health.read().expect("health").clone();

    let mut gw_rows = String::new();
    for (host, gateways) in view.gateways_by_host() {
        gw_rows.push_str(&format!(
            "<tr class=\"group\"><th colspan=\"6\">host {} · {} gateway{}</th></tr>",
            esc(&host),
            gateways.len(),
            if gateways.len() == 1 { "" } else { "s" }
        ));
        for g in gateways {
            let h = health.get(&g.name);
            let ok = h.is_some_and(|h| h.healthy);
            let version = h.map(|h| h.version.clone()).filter(|v| !v.is_empty()).unwrap_or_else(|| g.version.clone());
            let count = view.agents.values().filter(|a| a.gateway == g.name).count();
            let problem = h.and_then(|h| h.problem.clone()).unwrap_or_default();
            let place = match &g.member {
                Some(m) => format!("{} · member {}", g.host, m),
                None => g.host.clone(),
            };
            gw_rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><span class=\"pill {}\">{}</span></td><td>{}</td><td>{count}</td><td class=\"dim\">{}</td></tr>",
                esc(&g.name),
                esc(&place),
                if ok { "online" } else { "offline" },
                if ok { "healthy" } else { "down" },
                esc(&version),
                esc(&problem)
            ));
        }
    }
    let layout = app.layout();
    let now = crate::clock::now_ms().div_euclid(1000);
    let budgets = tokio::task::spawn_blocking(move || {
        crate::litellm::spend::standings(&layout.keys_file(), &layout.spend_ledger(), now)
    })
    .await
    .unwrap_or_default();
    let mut agent_cards = String::new();
    for a in &agents {
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        let status = a["status"].as_str().unwrap_or("offline");
        let last = a["last_message"].get("text").and_then(Value::as_str).unwrap_or("—");
        let last = if last.chars().count() > 90 {
            format!("{}…", last.chars().take(90).collect::<String>())
        } else {
            last.to_string()
        };
        let t = &a["today"];
        let today = format!(
            "today: {} calls · {} tok in / {} out · ${:.4}",
            t["calls"].as_i64().unwrap_or(0),
            t["tokens_in"].as_i64().unwrap_or(0),
            t["tokens_out"].as_i64().unwrap_or(0),
            t["cost_usd"].as_f64().unwrap_or(0.0)
        );
        let mut turns = String::new();
        for turn in a["turns"].as_array().into_iter().flatten() {
            let tools =
                turn["tools"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
            let tools = tools.filter(|t| !t.is_empty()).map(|t| format!(" <span class=\"tools\">⚙ {}</span>", esc(&t)));
            let out = turn["text_out"].as_str().or(turn["error"].as_str()).unwrap_or("…");
            turns.push_str(&format!(
                "<li data-turn><span class=\"dim\">{ch}</span> {inp}{tools} → {out}</li>",
                ch = esc(turn["channel"].as_str().unwrap_or("")),
                inp = esc(turn["text_in"].as_str().unwrap_or("")),
                tools = tools.unwrap_or_default(),
                out = esc(out),
            ));
        }
        agent_cards.push_str(&format!(
            "<button class=\"agent\" data-agent=\"{name}\"><div class=\"row\"><strong>{name}</strong>\
             <span class=\"pill {status}\" data-status>{status}</span></div>\
             <div class=\"dim\">{model} · gateway {gw} · {host}</div>\
             <div class=\"last\" data-last>{last}</div><div class=\"dim small\" data-when>{when}</div>\
             <div class=\"dim small\" data-today>{today}</div>{budget}<ul class=\"turns small\">{turns}</ul></button>",
            budget = budgets.get(a["name"].as_str().unwrap_or_default()).map(budget_bar).unwrap_or_default(),
            today = esc(&today),
            name = esc(&s("name")),
            model = esc(&s("model")),
            gw = esc(&s("gateway")),
            host = esc(&s("host")),
            last = esc(&last),
            when = esc(a["last_activity"].as_str().unwrap_or("no activity yet")),
        ));
    }
    let mut run_rows = String::new();
    for r in &view.runs {
        run_rows.push_str(&format!(
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td><span class=\"pill {}\">{}</span></td><td>{} steps{}</td></tr>",
            r.id,
            esc(&r.command),
            esc(&r.started_at),
            if r.status == "ok" {
                "online"
            } else if r.status == "running" {
                "provisioning"
            } else {
                "offline"
            },
            esc(&r.status),
            r.steps,
            if r.failed > 0 { format!(", {} failed", r.failed) } else { String::new() }
        ));
    }
    let body = format!(
        "<header><h1>fleet <span class=\"dim\">{fleet}</span></h1><span class=\"dim\">{n} agents · {g} gateways <button id=\"signout\" class=\"link\">Sign out</button></span></header>\
         <main><section class=\"col\"><h2>Agents</h2><div class=\"agents\">{agent_cards}</div>\
         <h2>Gateways</h2><table><thead><tr><th>gateway</th><th>host</th><th>health</th><th>version</th><th>agents</th><th></th></tr></thead><tbody>{gw_rows}</tbody></table>\
         <h2>Last apply runs</h2><table><thead><tr><th>run</th><th>command</th><th>started</th><th>outcome</th><th></th></tr></thead><tbody>{run_rows}</tbody></table></section>\
         <section class=\"chat\" id=\"chat\"><h2 id=\"chat-title\">Chat</h2><div id=\"log\" class=\"log\"><p class=\"dim\">Pick an agent to talk to it.</p></div>\
         <form id=\"send\"><input id=\"text\" autocomplete=\"off\" placeholder=\"Message…\" disabled><button id=\"go\" disabled>Send</button></form></section></main>\
         <script>{SCRIPT}</script>",
        fleet = esc(&app.fleet),
        n = agents.len(),
        g = view.gateways.len(),
    );
    Html(shell(&format!("fleet — {}", app.fleet), &body)).into_response()
}

/// An agent's spend against its budget in the current window: a bar, and the figures.
fn budget_bar(s: &crate::litellm::spend::Standing) -> String {
    use crate::litellm::spend::usd;
    let pct = (100.0 * s.spent_usd / s.budget_usd).clamp(0.0, 100.0);
    let state = if s.refused { format!(" · refused, resets {}", s.resets) } else { String::new() };
    format!(
        "<div class=\"budget{over}\" data-budget title=\"{title}\"><div class=\"bar\"><span style=\"width:{pct:.0}%\"></span></div>\
         <div class=\"dim small\">{spent} of {of} · {window}{state}</div></div>",
        over = if s.refused { " over" } else { "" },
        title = esc(s.message.as_deref().unwrap_or("")),
        spent = usd(s.spent_usd),
        of = usd(s.budget_usd),
        window = esc(&s.window),
        state = esc(&state),
    )
}
