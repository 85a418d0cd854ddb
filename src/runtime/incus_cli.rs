//! The `incus` CLI as fleet calls it: one client for every host (a remote of a client config, or
//! the local daemon), async, errors that never repeat a secret argument; `incus query` for the REST
//! API, which works for remotes too.

use std::path::Path;

use miette::miette;
use serde_json::Value;
use tokio::process::Command;

/// Runs the `incus` CLI (so INCUS_DIR and `incus remote` settings apply); stdout, or stderr as the
/// error. Async (tokio's process), so waiting on Incus never blocks the runtime's threads.
pub async fn incus(args: &[&str]) -> miette::Result<String> {
    Cli::default().run(args).await
}

/// `incus` with the client config `config` (INCUS_CONF; the caller's default when None).
pub async fn incus_in(config: Option<&Path>, args: &[&str]) -> miette::Result<String> {
    Cli { config, ..Cli::default() }.run(args).await
}

/// One way to call the `incus` CLI: which client config (INCUS_CONF: fleet's own for other
/// hosts, the caller's default otherwise), what to type at its prompt, and what of the command
/// line an error may repeat (a trust token must not).
#[derive(Default)]
pub struct Cli<'a> {
    pub config: Option<&'a std::path::Path>,
    pub stdin: Option<&'a str>,
    /// Say only the first this-many arguments in an error.
    pub shown_args: Option<usize>,
}

impl Cli<'_> {
    pub async fn run(&self, args: &[&str]) -> miette::Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = Command::new("incus");
        cmd.args(args).kill_on_drop(true).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        cmd.stdin(if self.stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
        if let Some(dir) = self.config {
            cmd.env("INCUS_CONF", dir);
        }
        let mut child = cmd.spawn().map_err(|e| miette!("cannot run incus: {e}; is incus installed?"))?;
        if let (Some(text), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        let out = child.wait_with_output().await.map_err(|e| miette!("incus: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let shown = &args[..self.shown_args.unwrap_or(args.len()).min(args.len())];
        let more = if shown.len() < args.len() { " …" } else { "" };
        let err = String::from_utf8_lossy(&out.stderr);
        // After a prompt, its own lines are noise in an error; the last line says what went wrong.
        let why = match self.stdin {
            Some(_) => err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim(),
            None => err.trim(),
        };
        Err(miette!("incus {}{more}: {why}", shown.join(" ")))
    }

    /// `incus query` of a REST path as JSON.
    pub async fn query(&self, path: &str) -> miette::Result<Value> {
        let text = self.run(&["query", path]).await?;
        serde_json::from_str(&text).map_err(|e| miette!("incus query {path}: not JSON: {e}"))
    }
}

/// `remote:name` or `name`.
pub fn target(remote: &Option<String>, name: &str) -> String {
    match remote {
        Some(r) => format!("{r}:{name}"),
        None => name.to_string(),
    }
}

/// `incus query` of a REST path (on the remote, if any), as JSON; None when it fails.
pub async fn query(remote: &Option<String>, path: &str) -> Option<Value> {
    query_in(None, remote, path).await
}

/// `query` with the client config `config`.
pub async fn query_in(config: Option<&Path>, remote: &Option<String>, path: &str) -> Option<Value> {
    incus_in(config, &["query", &target(remote, path)]).await.ok().and_then(|s| serde_json::from_str(&s).ok())
}

pub async fn instance_state(config: Option<&Path>, remote: &Option<String>, name: &str) -> Option<String> {
    query_in(config, remote, &format!("/1.0/instances/{name}/state")).await?["status"].as_str().map(str::to_string)
}
