//! `gateway.<name>`: an OpenClaw gateway, on the runtime its host names. fleet
//! owns the `gateway`, `update` and `logging` parts of its config (merged into
//! the file the gateway itself also writes); changing them restarts the gateway,
//! nothing else does. Ready when the `health` RPC answers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::handle_path;
use super::client::{read_token, GatewayClient, GatewayRef};
use super::gateway_tls::TlsRecord;
use crate::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fsutil::write_atomic;
use crate::resource::Resource;
use crate::runtime::{Handle, HomeFile, Launch, Runtime};
use crate::state::Record;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayInputs {
    pub launch: Launch,
    pub runtime: String,
    pub token_file: PathBuf,
    /// The fleet-owned top-level keys of openclaw.json (token added when written).
    pub settings: Value,
    pub start_timeout_s: u64,
    /// What the gateway's image is (its sha256 or recipe fingerprint): a new one restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// fleet's trace plugin (its digest), written into the home before the gateway starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// Merges `patch` into `base`: objects key by key, everything else replaced.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// openclaw.json as it is in the home (`{}` when there is none yet) and as fleet wants it: the
/// same document with the fleet-owned settings and the token merged in, everything the gateway
/// added kept. One that cannot be read, or is not JSON, is an error: written over, it would lose
/// every agent's entry.
async fn config_now_and_wanted(g: &GatewayInputs, rt: &dyn Runtime) -> miette::Result<(Value, Value)> {
    let now: Value = match rt.read_home(&g.launch, Path::new(CONFIG)).await? {
        None => json!({}),
        Some(b) => serde_json::from_slice(&b).into_diagnostic().wrap_err_with(|| {
            format!("{CONFIG} in the home of gateway {} is not JSON; fleet will not write over it", g.launch.gateway)
        })?,
    };
    let mut settings = g.settings.clone();
    settings["gateway"]["auth"]["token"] = json!(read_token(&g.token_file)?);
    let mut wanted = now.clone();
    merge(&mut wanted, &settings);
    if g.plugin.is_none() {
        // No daemon (any more): fleet's trace plugin is not loaded.
        super::plugin::unload(&mut wanted);
    }
    Ok((now, wanted))
}

/// The config's name in a gateway home.
const CONFIG: &str = "openclaw.json";

/// Writes the fleet-owned settings (and the token) into openclaw.json, keeping what the gateway
/// added, and fleet's trace plugin beside it, into the gateway's home wherever it is.
/// `extra`: more files for the home (the gateway's TLS certificate and key).
pub async fn write_config(g: &GatewayInputs, rt: &dyn Runtime, extra: Vec<HomeFile>) -> miette::Result<()> {
    let mut files = if g.plugin.is_some() { super::plugin::files() } else { Vec::new() };
    files.extend(extra);
    let (_, doc) = config_now_and_wanted(g, rt).await?;
    let content = serde_json::to_vec_pretty(&doc).into_diagnostic()?;
    files.push(HomeFile { path: CONFIG.into(), content, mode: 0o600 });
    rt.place(&g.launch, &files)
        .await
        .wrap_err("cannot write openclaw.json, fleet's trace plugin and the gateway's certificate")
}

/// How fleet reaches this gateway: the URL its runtime gives.
fn gateway_ref(g: &GatewayInputs, runtime: &dyn Runtime) -> GatewayRef {
    GatewayRef { name: g.launch.gateway.clone(), url: runtime.url(&g.launch), token_file: g.token_file.clone() }
}

pub struct GatewayDriver;

impl GatewayDriver {
    pub fn runtime(&self, g: &GatewayInputs) -> miette::Result<&'static dyn Runtime> {
        crate::runtime::by_kind::by_name(&g.runtime).ok_or_else(|| miette!("no {} runtime in this build", g.runtime))
    }

    fn pid_file(g: &GatewayInputs) -> PathBuf {
        handle_path(&g.token_file)
    }

    /// Writes the handle file: the handle, how the gateway was launched (so a step other than the
    /// gateway's own can start it again), and whether it is still `starting`.
    fn write_handle(g: &GatewayInputs, mut doc: Value) -> std::io::Result<()> {
        doc["inputs"] = serde_json::to_value(g).unwrap_or(Value::Null);
        write_atomic(&Self::pid_file(g), doc.to_string().as_bytes(), 0o644)
    }

    /// The handle file: written the moment a gateway is started (`starting`), rewritten once healthy.
    fn handle_file(g: &GatewayInputs) -> Option<Value> {
        std::fs::read(Self::pid_file(g)).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    }

    /// This fleet's processes for the gateway that the record may not know: the handle file's, and
    /// what its runtime finds of it (`Runtime::strays`) — never a process that merely has the same name.
    async fn strays(&self, g: &GatewayInputs) -> Vec<Handle> {
        let Ok(rt) = self.runtime(g) else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(h) = Self::handle_file(g).and_then(|v| Handle::recorded_in(&v)) {
            if rt.running(&h).await {
                out.push(h);
            }
        }
        for h in rt.strays(&g.launch).await {
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// Waits, at most the start timeout, until a gateway process is past its start: healthy, or
    /// gone. Stopping one mid-start (while it migrates its state) leaves OpenClaw's state leases
    /// held for minutes, and the next gateway on that home refuses to start.
    async fn settle(&self, g: &GatewayInputs, handle: &Handle, ctx: &StepCtx) {
        let Ok(rt) = self.runtime(g) else { return };
        let t0 = Instant::now();
        let mut said = false;
        while rt.running(handle).await && t0.elapsed() < Duration::from_secs(g.start_timeout_s) {
            if self.unhealthy(g, Some(handle)).await.is_none() {
                return;
            }
            if !said {
                ctx.progress(&format!("waiting for the gateway a previous run started ({handle}) to finish starting"));
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn stop_strays(&self, g: &GatewayInputs, ctx: &StepCtx) -> miette::Result<()> {
        let rt = self.runtime(g)?;
        for h in self.strays(g).await {
            self.settle(g, &h, ctx).await;
            ctx.progress(&format!("stopping an unrecorded process of this gateway ({h})"));
            rt.stop(&g.launch, &h).await?;
        }
        Ok(())
    }

    async fn start(&self, g: &GatewayInputs, ctx: &StepCtx) -> miette::Result<Outputs> {
        let rt = self.runtime(g)?;
        self.stop_strays(g, ctx).await?;
        if let Some(holder) = rt.port_taken(&g.launch) {
            return Err(miette!(
                "port {} is already in use by {holder}; give gateway {} another `port`",
                g.launch.port,
                g.launch.gateway
            ));
        }
        // Over TLS: the certificate it serves (the pinned one while the home holds it; else a new one).
        let (tls, tls_files) = match g.launch.over_tls() {
            true => {
                let recorded = Self::handle_file(g).as_ref().and_then(TlsRecord::recorded_in);
                let (rec, files) = super::gateway_tls::ensure(&g.launch, rt, recorded).await?;
                if !files.is_empty() {
                    ctx.progress(&format!("minted its TLS certificate (sha256 {}…)", &rec.sha256[..16]));
                }
                (Some(rec), files)
            }
            false => (None, Vec::new()),
        };
        write_config(g, rt, tls_files).await?;
        let handle = rt.start(&g.launch).await?;
        // Where it is published now (on a cluster: the member it landed on).
        let gref = GatewayRef { url: rt.url_of(&g.launch, &handle), ..gateway_ref(g, rt) };
        // Intent before waiting: from here on, a crash leaves a gateway the next run finds and adopts or
        // stops. The pin goes with the URL: every caller dials only this certificate.
        let starting = json!({"handle": handle, "starting": true, "url": gref.url, "tls": tls});
        if let Err(e) = Self::write_handle(g, starting) {
            let _ = rt.stop(&g.launch, &handle).await;
            return Err(e).into_diagnostic().wrap_err("cannot record the gateway's handle");
        }
        ctx.progress(&format!("started; waiting for the health RPC on {}", gref.url));
        let t0 = Instant::now();
        let timeout = Duration::from_secs(g.start_timeout_s);
        let client: GatewayClient = loop {
            if !rt.running(&handle).await {
                return Err(miette!("the gateway exited during start; {}", rt.logs(&g.launch).await));
            }
            match gref.connect_within(Duration::from_secs(2)).await {
                Ok(c) => break c,
                Err(_) if t0.elapsed() < timeout => continue,
                Err(e) => {
                    let _ = rt.stop(&g.launch, &handle).await;
                    return Err(miette!(
                        "{}; not healthy within {} s (stopped it); {}",
                        crate::driver::error_chain(&e),
                        g.start_timeout_s,
                        rt.logs(&g.launch).await
                    ));
                }
            }
        };
        loop {
            match client.healthy().await {
                Ok(true) => break,
                _ if t0.elapsed() < timeout => tokio::time::sleep(Duration::from_millis(500)).await,
                other => {
                    let _ = rt.stop(&g.launch, &handle).await;
                    return Err(miette!("health never answered ok ({other:?}); {}", rt.logs(&g.launch).await));
                }
            }
        }
        let out = json!({"handle": handle, "boot_id": client.boot_id(), "version": client.server_version(),
            "url": gref.url, "tls": tls});
        Self::write_handle(g, out.clone()).into_diagnostic()?;
        Ok(out)
    }

    async fn stop_recorded(&self, g: &GatewayInputs, outputs: &Value) -> miette::Result<()> {
        let rt = self.runtime(g)?;
        if let Some(h) = Handle::recorded_in(outputs) {
            rt.stop(&g.launch, &h).await?;
        }
        Ok(())
    }

    /// Health of a recorded gateway: None when fine, else why not.
    pub async fn unhealthy(&self, g: &GatewayInputs, handle: Option<&Handle>) -> Option<String> {
        let rt = self.runtime(g).ok()?;
        let Some(handle) = handle else { return Some(format!("gateway {} is not running", g.launch.gateway)) };
        if !rt.running(handle).await {
            if let Some(why) = rt.unreachable(&g.launch, handle).await {
                return Some(format!("gateway {} is {why}", g.launch.gateway));
            }
            return Some(format!("gateway {} is not running", g.launch.gateway));
        }
        match gateway_ref(g, rt).connect_within(Duration::from_secs(10)).await {
            Ok(c) => match c.healthy().await {
                Ok(true) => None,
                Ok(false) => Some(format!("gateway {} reports itself unhealthy", g.launch.gateway)),
                Err(e) => Some(format!("gateway {}: {e}", g.launch.gateway)),
            },
            Err(e) => Some(crate::driver::error_chain(&e)),
        }
    }
}

#[async_trait::async_trait]
impl Driver for GatewayDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let Ok(g) = prior.inputs_as::<GatewayInputs>() else { return Drift::Update("unreadable record".into()) };
        let now = crate::tls::mint::now_s();
        if let Some(t) = TlsRecord::recorded_in(&prior.outputs).filter(|t| t.due(now)) {
            let days = (t.not_after - now).max(0) / 86_400;
            return Drift::Update(format!("its TLS certificate ends in {days} days; a new one is minted"));
        }
        match self.unhealthy(&g, Handle::recorded_in(&prior.outputs).as_ref()).await {
            None => Drift::InSync,
            Some(why) => Drift::Update(why),
        }
    }

    /// A gateway started again by its models step (see `await_restart`) is recorded by its new handle.
    async fn refreshed(&self, rec: &Record) -> Option<Outputs> {
        let g = rec.inputs_as::<GatewayInputs>().ok()?;
        let live = live_outputs(&g, &rec.outputs);
        let handle = Handle::recorded_in(&live);
        (handle != Handle::recorded_in(&rec.outputs) && self.unhealthy(&g, handle.as_ref()).await.is_none())
            .then_some(live)
    }

    async fn observe_unrecorded(&self, desired: &Resource) -> Option<String> {
        let g = desired.inputs_as::<GatewayInputs>().ok()?;
        let h = self.strays(&g).await.into_iter().next()?;
        Some(format!("an unrecorded gateway of this fleet is running, {h}; it will be adopted or replaced"))
    }

    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let g = r.inputs_as::<GatewayInputs>()?;
        // Adopt a gateway this fleet started before (state lost, or a crash before it was recorded) when
        // it is healthy and its settings match; `start` stops any other.
        if let Some(mut prev) = Self::handle_file(&g) {
            let handle = Handle::recorded_in(&prev);
            if let Some(h) = handle.as_ref().filter(|_| prev["starting"] == true) {
                self.settle(&g, h, ctx).await;
            }
            if self.unhealthy(&g, handle.as_ref()).await.is_none() {
                let (on_disk, want) = config_now_and_wanted(&g, self.runtime(&g)?).await?;
                if want == on_disk {
                    ctx.progress("adopting the running gateway");
                    if let Some(o) = prev.as_object_mut() {
                        o.remove("starting");
                        o.remove("inputs");
                    }
                    Self::write_handle(&g, prev.clone()).into_diagnostic()?;
                    return Ok(prev);
                }
            }
        }
        self.start(&g, ctx).await
    }

    async fn update(&self, r: &Resource, prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        let g = r.inputs_as::<GatewayInputs>()?;
        if let Ok(old) = prior.inputs_as::<GatewayInputs>() {
            ctx.progress("stopping the gateway to restart it");
            self.stop_recorded(&old, &prior.outputs).await?;
        }
        self.start(&g, ctx).await
    }

    /// Stops the gateway, and any unrecorded process of it a crash left, and removes the copies of
    /// its config OpenClaw keeps (they hold agents' keys). Its home (config, state, workspaces) is
    /// kept: a replace starts the gateway again on it.
    async fn delete(&self, prior: &Record, ctx: &StepCtx) -> miette::Result<()> {
        let g = prior.inputs_as::<GatewayInputs>()?;
        self.stop_recorded(&g, &prior.outputs).await?;
        self.stop_strays(&g, ctx).await?;
        // A container on another host holds the home: it goes with the gateway.
        self.runtime(&g)?.discard(&g.launch).await?;
        let _ = std::fs::remove_file(Self::pid_file(&g));
        remove_config_copies(&g.launch.config_file())
            .into_diagnostic()
            .wrap_err("cannot remove the copies of the gateway's config")?;
        Ok(())
    }
}

/// Removes every copy OpenClaw keeps beside a stopped gateway's openclaw.json (`.bak*`,
/// `.last-good`, …): older configs, with keys fleet has since revoked and taken out of the config.
fn remove_config_copies(config: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (config.parent(), config.file_name().and_then(|n| n.to_str())) else { return Ok(()) };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd.flatten() {
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&format!("{name}.")) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The config file of a gateway that is not running — no process of it (handle file and, on the
/// process runtime, any session working in its home) and nothing listening on its port — so its
/// openclaw.json may be edited on disk. None: it runs, or fleet cannot tell (no handle file, a
/// home not on this machine).
pub async fn config_if_down(token_file: &Path) -> Option<PathBuf> {
    let (g, _) = recorded_launch(token_file)?;
    if g.launch.container.as_ref().is_some_and(|c| c.remote.is_some()) {
        return None;
    }
    if !GatewayDriver.strays(&g).await.is_empty() || crate::process::port_open("127.0.0.1", g.launch.port) {
        return None;
    }
    Some(g.launch.config_file()).filter(|p| p.exists())
}

/// The openclaw.json of a gateway whose home is on this machine (None: on another host, or fleet
/// has no handle file of it).
pub fn config_here(token_file: &Path) -> Option<PathBuf> {
    let (g, _) = recorded_launch(token_file)?;
    g.launch.home_is_here().then(|| g.launch.config_file())
}

/// Stops a gateway of this machine that the same run deletes, so that its agents' removal is an
/// edit of its `openclaw.json` on disk (`config_if_down`) instead of one serialised `agents.delete`
/// each (~5.6 s apiece, a config reload each, measured). Several agent steps call this at once:
/// one stops it (one lock per gateway), the others find it stopped. Nothing here to stop (no
/// handle file; a home on another host) or a stop that fails: the caller asks the gateway as usual
/// (`config_if_down` tells).
pub async fn stop_as_it_goes(token_file: &Path, ctx: &StepCtx) {
    type Locks = std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::LazyLock<Locks> = std::sync::LazyLock::new(Default::default);
    let Some((g, file)) = recorded_launch(token_file) else { return };
    if g.launch.container.as_ref().is_some_and(|c| c.remote.is_some()) {
        return;
    }
    let Ok(rt) = GatewayDriver.runtime(&g) else { return };
    let lock = LOCKS.lock().unwrap_or_else(|p| p.into_inner()).entry(token_file.to_path_buf()).or_default().clone();
    let _one = lock.lock().await;
    // One still starting (by its handle file, or found only by its working directory) is let
    // finish first: a kill mid-start has broken a home's state before (docs/reliability.md). One
    // that started and now hangs is stopped at once — destroy means destroy.
    for h in GatewayDriver.strays(&g).await {
        if file["starting"] == true || Handle::recorded_in(&file).as_ref() != Some(&h) {
            GatewayDriver.settle(&g, &h, ctx).await;
        }
        ctx.progress(&format!("gateway {} goes in this run too: stopping it first ({h})", g.launch.gateway));
        if let Err(e) = rt.stop(&g.launch, &h).await {
            ctx.progress(&format!("could not stop it ({}); asking it instead", crate::driver::error_chain(&e)));
            return;
        }
    }
}

/// An agent's directories in a gateway's home: its workspace and OpenClaw's state of it.
fn agent_dirs(id: &str) -> [PathBuf; 2] {
    [Path::new("workspaces").join(id), Path::new("state/agents").join(id)]
}

/// A gateway whose home is on another host (by its recorded launch), for moving agents' footprints
/// between that home and this machine's directory of the gateway, where archives are taken from
/// and restored into.
pub struct HomeElsewhere {
    g: GatewayInputs,
    rt: &'static dyn Runtime,
}

impl HomeElsewhere {
    /// None for a gateway whose home is on this machine (or that has never been launched).
    pub fn of(token_file: &Path) -> miette::Result<Option<HomeElsewhere>> {
        let Some((g, _)) = recorded_launch(token_file) else { return Ok(None) };
        if g.launch.home_is_here() {
            return Ok(None);
        }
        let rt = GatewayDriver.runtime(&g)?;
        Ok(Some(HomeElsewhere { g, rt }))
    }

    /// What is left of agent `id` there brought to this machine (and deleted there).
    pub async fn bring_agent_here(&self, id: &str) -> miette::Result<()> {
        for dir in agent_dirs(id) {
            self.rt
                .bring_here(&self.g.launch, &dir)
                .await
                .wrap_err_with(|| format!("cannot fetch {} from gateway {}", dir.display(), self.g.launch.gateway))?;
        }
        Ok(())
    }

    /// What of agent `id` is in this machine's directory of the gateway (put there by a restore or
    /// a move) pushed into the home there, replacing what was there, and removed here.
    pub async fn send_agent_there(&self, id: &str) -> miette::Result<()> {
        for dir in agent_dirs(id) {
            self.rt
                .send_there(&self.g.launch, &dir)
                .await
                .wrap_err_with(|| format!("cannot push {} into gateway {}", dir.display(), self.g.launch.gateway))?;
        }
        Ok(())
    }

    /// Whether agent `id` has a workspace there.
    pub async fn has_workspace(&self, id: &str) -> bool {
        self.rt.home_has(&self.g.launch, &agent_dirs(id)[0]).await
    }
}

/// The handle file of the gateway whose token is `token_file`: the inputs it was launched with,
/// and the whole document (`handle`, `starting`). None without one.
fn recorded_launch(token_file: &Path) -> Option<(GatewayInputs, Value)> {
    let doc: Value = serde_json::from_slice(&std::fs::read(handle_path(token_file)).ok()?).ok()?;
    Some((serde_json::from_value(doc.get("inputs")?.clone()).ok()?, doc))
}

/// What the gateway's process is now: the handle file when it names a gateway that finished
/// starting (a step other than the gateway's own may have started it again, see
/// `await_restart`), else what the record says.
fn live_outputs(g: &GatewayInputs, recorded: &Value) -> Value {
    match GatewayDriver::handle_file(g) {
        Some(mut h) if h.get("handle").is_some() && h["starting"] != true => {
            if let Some(o) = h.as_object_mut() {
                o.remove("inputs");
            }
            h
        }
        _ => recorded.clone(),
    }
}

/// `await_restart` for a caller whose call met the restart: waits, then connects to the process
/// running now.
pub async fn reconnect_after_restart(
    gref: &GatewayRef,
    old: &GatewayClient,
    ctx: &StepCtx,
) -> miette::Result<GatewayClient> {
    await_restart(gref, old.boot_id(), ctx).await?;
    gref.connect().await
}

/// Waits for a gateway that restarts itself to apply a config patch to come back (a new boot,
/// healthy). OpenClaw can fail such a restart and exit (e.g. while an agent it was deleting is
/// half gone: "agent database is unavailable while agent … is deleted"); fleet runs gateways
/// without OpenClaw's respawn, so the gateway is then started again here, as its own step would,
/// from the launch its handle file records. A gateway that neither comes back nor exits within
/// two minutes is an error.
pub async fn await_restart(gref: &GatewayRef, old_boot: &str, ctx: &StepCtx) -> miette::Result<()> {
    let t0 = Instant::now();
    if old_boot.is_empty() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let recorded = recorded_launch(&gref.token_file).and_then(|(g, doc)| Some((g, Handle::recorded_in(&doc)?)));
    let d = GatewayDriver;
    while t0.elapsed() < Duration::from_secs(120) {
        if let Some(c) = gref.try_connect(Duration::from_secs(5)).await {
            // (A gateway that does not say its boot id is taken back once healthy.)
            if (old_boot.is_empty() || c.boot_id() != old_boot) && c.healthy().await.unwrap_or(false) {
                return Ok(());
            }
        }
        if let Some((g, handle)) = &recorded {
            if !d.runtime(g)?.running(handle).await {
                ctx.progress(&format!(
                    "gateway {} exited instead of restarting (its log: {}); starting it again",
                    gref.name,
                    g.launch.log.display()
                ));
                d.start(g, ctx).await?;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(miette!("gateway {} did not come back within 120 s after restarting to apply the patch", gref.name))
}
