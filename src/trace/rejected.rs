//! The senders' dead-letter files: trace events the daemon refused for good (by index in its
//! answer, docs/api.md), kept by the proxy's callback and by fleet's plugin in each gateway, one
//! JSON line each — `{"at", "sender", "code", "message", "event"}` — so a refused event is never
//! lost silently. Read by `fleet trace AGENT --rejected`.

use std::path::PathBuf;

use serde_json::Value;

/// The callback's, beside its spool (`<data dir>/litellm/`).
pub const CALLBACK_FILE: &str = "callback-rejected.jsonl";
/// The plugin's, in its gateway's home.
pub const PLUGIN_FILE: &str = ".fleet/trace-rejected.jsonl";

/// One refused event as its sender kept it.
pub struct Rejected {
    pub file: PathBuf,
    pub line: Value,
}

impl Rejected {
    /// `<at>  <sender>  <code>  <kind> <id>: <message>`.
    pub fn describe(&self) -> String {
        let s = |k: &str| self.line[k].as_str().unwrap_or("?").to_string();
        let e = &self.line["event"];
        format!(
            "{}  {:<8}  {:<16}  {} {}: {}",
            s("at"),
            s("sender"),
            s("code"),
            e["kind"].as_str().unwrap_or("?"),
            e["id"].as_str().unwrap_or("?"),
            s("message")
        )
    }
}

/// Every line of `files` (those that exist) about `agent`, in file order.
pub fn read(files: &[PathBuf], agent: &str) -> Vec<Rejected> {
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["event"]["agent_name"].as_str() == Some(agent))
                .map(|line| Rejected { file: f.clone(), line }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_refused_events_are_read_from_every_sender_and_torn_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        std::fs::write(&a, "{\"at\":\"t\",\"sender\":\"litellm\",\"code\":\"invalid_event\",\"message\":\"events[0].trace_id: too long\",\"event\":{\"id\":\"1\",\"kind\":\"llm_call\",\"agent_name\":\"alice\"}}\n{\"torn").unwrap();
        std::fs::write(&b, "{\"at\":\"t\",\"sender\":\"openclaw\",\"code\":\"x\",\"message\":\"m\",\"event\":{\"id\":\"2\",\"kind\":\"tool_call\",\"agent_name\":\"bob\"}}\n").unwrap();
        let found = read(&[a, b, dir.path().join("missing")], "alice");
        assert_eq!(found.len(), 1);
        assert!(found[0].describe().contains("invalid_event") && found[0].describe().contains("llm_call 1"));
    }
}
