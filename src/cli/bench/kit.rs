//! What the benchmarks share: a quiet in-process apply, a free port, milliseconds as text.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};

use crate::engine::{Goal, Options, Session};
use crate::exec::{Reporter, StepOutcome};
use crate::layout::Layout;
use crate::plan::Action;

/// A reporter that says nothing.
pub struct Quiet;
impl Reporter for Quiet {
    fn started(&self, _: &str, _: Action) {}
    fn finished(&self, _: &StepOutcome) {}
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The `p` quantile (0–1) of timings (sorts them).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn free_port() -> miette::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0").into_diagnostic()?.local_addr().into_diagnostic()?.port())
}

/// Applies (or destroys) in process, quietly; fails unless every step succeeded. The session
/// releases the apply lock on every way out, errors included.
pub fn apply_in_process(
    rt: &tokio::runtime::Runtime,
    file: &Path,
    layout: &Layout,
    goal: Goal,
) -> miette::Result<usize> {
    let spec = crate::fleetfile::load(file)?;
    let session = Session::open(layout, "bench")?;
    let p = rt.block_on(session.plan(&spec, layout, goal, &Options::default()))?;
    let summary = rt.block_on(session.apply(&p, spec.parallelism, Arc::new(Quiet)))?;
    if !summary.success() {
        let why: Vec<String> = summary
            .outcomes
            .iter()
            .filter_map(|o| match &o.status {
                crate::exec::Status::Failed(e) => Some(format!("{}: {e}", o.address)),
                _ => None,
            })
            .collect();
        return Err(miette!("apply failed: {}", why.join("; ")));
    }
    Ok(p.plan.changes.len())
}

/// A fleet of one gateway and `n` agents on a mock model, on ports of its own.
pub fn gateway_fleet(n: usize, proxy_port: u16, gw_port: u16) -> String {
    let mut s = format!(
        "fleet \"bench\" {{ parallelism 8 }}\nlitellm port={proxy_port}\n\
         provider \"demo\" type=\"mock\" {{ model \"demo-small\" response=\"Hello from the demo model.\" }}\n\
         gateway \"main\" port={gw_port}\n"
    );
    for i in 0..n {
        s.push_str(&format!("agent \"agent-{i:03}\" model=\"demo-small\"\n"));
    }
    s
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn time_n(runs: usize, mut f: impl FnMut() -> miette::Result<()>) -> miette::Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    Ok(median(v))
}

/// Median time of `runs` end-to-end `fleet apply` runs (this very binary) against a data dir.
pub fn cli_apply(runs: usize, data: &Path, file: &Path) -> miette::Result<Duration> {
    let exe = std::env::current_exe().into_diagnostic()?;
    time_n(runs, || {
        let status = Command::new(&exe)
            .args(["apply", "--data-dir"])
            .arg(data)
            .arg(file)
            .stdout(Stdio::null())
            .status()
            .into_diagnostic()?;
        status.success().then_some(()).ok_or_else(|| miette!("fleet apply exited with {status}"))
    })
}
