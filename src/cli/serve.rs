//! `fleet serve` (the daemon in the foreground, or as apply starts it), `fleet status`, and the
//! daemon as `fleet chat` reaches it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Value};

use super::loaded::{load, runtime};
use crate::fleetfile::model::{DEFAULT_REPLY_TIMEOUT_S, DEFAULT_SERVE_LISTEN};
use crate::layout::Layout;

pub struct ServeArgs<'a> {
    pub path: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub listen: Option<String>,
    /// Run from the state alone (how apply starts it): no fleet file is read.
    pub from_state: bool,
    pub fleet: Option<String>,
    pub reply_timeout: Option<u64>,
    pub print_unit: bool,
}

/// The admin token, minted (0600) if apply has not yet (as the `serve.admin-token` step would).
fn admin_token(layout: &Layout) -> miette::Result<String> {
    let t = crate::litellm::resources::ensure_secret_file(&layout.serve_token(), "fleet-admin-")?;
    Ok(t.expose().to_string())
}

pub fn serve(a: ServeArgs) -> miette::Result<ExitCode> {
    let (fleet, layout, listen, timeout, file) = if a.from_state {
        let data_dir = a.data_dir.ok_or_else(|| miette!("--from-state needs --data-dir"))?;
        let layout = Layout { data_dir: data_dir.to_path_buf(), cache_dir: PathBuf::new() };
        let fleet = a
            .fleet
            .clone()
            .unwrap_or_else(|| data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        (fleet, layout, a.listen.clone().unwrap_or_else(|| DEFAULT_SERVE_LISTEN.into()), a.reply_timeout, None)
    } else {
        let l = load(a.path, a.data_dir)?;
        let listen = a
            .listen
            .clone()
            .or_else(|| l.spec.serve.as_ref().map(|s| s.listen()))
            .unwrap_or_else(|| DEFAULT_SERVE_LISTEN.into());
        let timeout = a.reply_timeout.or_else(|| l.spec.serve.as_ref().map(|s| s.reply_timeout_s));
        let file = crate::fleetfile::locate(a.path).ok().and_then(|f| std::fs::canonicalize(f).ok());
        (l.spec.name.clone(), l.layout, listen, timeout, file)
    };
    let (bind, port) =
        crate::netaddr::split_listen(&listen).ok_or_else(|| miette!("invalid --listen {listen:?}: write IP:PORT"))?;
    if a.print_unit {
        print!("{}", unit(&fleet, file.as_deref(), &layout, &listen)?);
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(layout.serve_dir()).into_diagnostic()?;
    admin_token(&layout)?; // minted (0600) if apply has not yet
    let url = crate::netaddr::http_url(&bind, port);
    let cfg = crate::serve::Config {
        fleet: fleet.clone(),
        data_dir: layout.data_dir.clone(),
        reply_timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_REPLY_TIMEOUT_S)),
    };
    return_large_buffers_to_the_system();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(crate::netaddr::join_host_port(&bind, port))
            .await
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot listen on {listen}"))?;
        println!(
            "fleet serve: {fleet} on {url} (pid {}); status page {url}/login (`fleet status --login` prints a one-time sign-in link)",
            std::process::id()
        );
        crate::serve::run(listener, cfg, stop_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon handles messages and event batches up to megabytes, on many threads. glibc serves an
/// allocation above 128 KiB with its own mapping, given back when freed — until the first such free
/// raises that threshold (up to 32 MiB), after which megabyte buffers come from the heap and their
/// freed memory mostly stays resident (measured: ~2.8 MiB per 1 MB message, never returned). A fixed
/// threshold, and two arenas instead of one per thread, keep the resident size what is live.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A systemd unit running this fleet's daemon in the foreground.
fn unit(fleet: &str, file: Option<&Path>, layout: &Layout, listen: &str) -> miette::Result<String> {
    let exe = std::env::current_exe().into_diagnostic()?;
    let what = match file {
        Some(f) => format!(
            "{} serve {} --data-dir {} --listen {listen}",
            exe.display(),
            f.display(),
            layout.data_dir.display()
        ),
        None => format!(
            "{} serve --from-state --data-dir {} --listen {listen} --fleet {fleet}",
            exe.display(),
            layout.data_dir.display()
        ),
    };
    Ok(format!(
        "# fleet serve for fleet {fleet}: install as /etc/systemd/system/fleet-serve-{fleet}.service\n\
         [Unit]\nDescription=fleet serve ({fleet}): chat routing and status for an OpenClaw fleet\nAfter=network.target\n\n\
         [Service]\nExecStart={what}\nRestart=on-failure\nRestartSec=2\nKillSignal=SIGTERM\nTimeoutStopSec=10\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    ))
}

/// The running daemon of a fleet, as the CLI reaches it: its URL and the admin token.
pub struct Daemon {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Daemon {
    /// The daemon the fleet file declares, if it answers — and only once it has proved that it
    /// holds this fleet's admin token (`/v1/prove`, an HMAC of a fresh nonce bound to the fleet and
    /// the port): a process that merely answers on the port never receives the token. Err when
    /// something answers but cannot prove it.
    pub async fn find(spec: &crate::fleetfile::FleetSpec, layout: &Layout) -> miette::Result<Option<Daemon>> {
        let Some(serve) = spec.serve.as_ref() else { return Ok(None) };
        let url = serve.url();
        if crate::serve::process::answering_pid(&url).await.is_none() {
            return Ok(None);
        }
        let Ok(token) = std::fs::read_to_string(layout.serve_token()).map(|t| t.trim().to_string()) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().into_diagnostic()?;
        let nonce = crate::fsutil::random_hex(32);
        let port = crate::netaddr::split_listen(&serve.listen()).map(|(_, p)| p).unwrap_or(0);
        let answer: Option<Value> = match http.get(format!("{url}/v1/prove?nonce={nonce}")).send().await {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        if !answer.is_some_and(|a| crate::serve::auth::proved(&a, &token, &spec.name, port, &nonce)) {
            return Err(miette!(
                help = "stop whatever listens there (`ss -ltnp`), or change `serve {{ listen }}`; then `fleet apply`",
                "the process answering on {url} is not fleet {}'s daemon: it cannot prove it holds the admin token, so the token is not sent",
                spec.name
            ));
        }
        Ok(Some(Daemon { url, token, http: reqwest::Client::new() }))
    }

    /// A one-time sign-in link for the status page (good for two minutes, once).
    pub async fn login_link(&self) -> miette::Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/login-codes", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .into_diagnostic()?;
        let v = answer(r).await?;
        Ok(format!("{}{}", self.url, v["path"].as_str().unwrap_or("/login")))
    }

    pub async fn get(&self, path: &str) -> miette::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await.into_diagnostic()?;
        answer(r).await
    }

    /// Posts a message and waits (at most `wait`) for its answer.
    pub async fn chat(&self, agent: &str, thread: &str, text: &str, wait: u64) -> miette::Result<Value> {
        let r = self
            .http
            .post(format!("{}/v1/agents/{agent}/messages?wait={wait}", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"text": text, "thread": thread, "from": "fleet chat"}))
            .timeout(Duration::from_secs(wait + 10))
            .send()
            .await
            .into_diagnostic()?;
        answer(r).await
    }

    /// The status page's sign-in (no secret in it).
    pub fn login_url(&self) -> String {
        format!("{}/login", self.url)
    }
}

async fn answer(r: reqwest::Response) -> miette::Result<Value> {
    let status = r.status();
    let v: Value = r.json().await.into_diagnostic()?;
    if !status.is_success() {
        return Err(miette!("the daemon answered {status}: {}", v["error"]["message"].as_str().unwrap_or("?")));
    }
    Ok(v)
}

pub fn status(path: Option<&Path>, data_dir: Option<&Path>, as_json: bool, login: bool) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    runtime()?.block_on(async {
        let Some(d) = Daemon::find(&l.spec, &l.layout).await? else {
            return Err(miette!(
                help = "declare `serve` in the fleet file and apply, or run `fleet serve`",
                "the daemon of fleet {} is not running",
                l.spec.name
            ));
        };
        let v = d.get("/v1/status").await?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
            return Ok(ExitCode::SUCCESS);
        }
        if login {
            // Asked for: a one-time link, good for two minutes (it signs in once, then is spent).
            println!("fleet {}  ·  sign in (once, within 2 minutes): {}", l.spec.name, d.login_link().await?);
        } else {
            println!(
                "fleet {}  ·  status page: {} (`fleet status --login` prints a one-time sign-in link)",
                l.spec.name,
                d.login_url()
            );
        }
        // Grouped by host (the daemon lists them so): a header line per host.
        println!("\n{:<16} {:<10} {:<9} {:<12} AGENTS", "GATEWAY", "MEMBER", "HEALTH", "VERSION");
        let mut host = None;
        for g in v["gateways"].as_array().into_iter().flatten() {
            if host != g["host"].as_str() {
                host = g["host"].as_str();
                println!("host {}", host.unwrap_or(""));
            }
            println!(
                "  {:<14} {:<10} {:<9} {:<12} {}",
                g["name"].as_str().unwrap_or(""),
                g["member"].as_str().unwrap_or("—"),
                if g["healthy"] == true { "healthy" } else { "down" },
                g["version"].as_str().unwrap_or(""),
                g["agents"]
            );
        }
        println!("\n{:<16} {:<13} {:<16} {:<12} LAST ACTIVITY", "AGENT", "STATUS", "MODEL", "GATEWAY");
        for a in v["agents"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:<13} {:<16} {:<12} {}",
                a["name"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or(""),
                a["model"].as_str().unwrap_or(""),
                a["gateway"].as_str().unwrap_or(""),
                a["last_activity"].as_str().unwrap_or("—")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
