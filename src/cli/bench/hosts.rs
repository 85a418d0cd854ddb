//! `fleet bench hosts`: the same three Incus gateways (two agents each) on one other host, then
//! one on each of three other hosts — cold apply and no-op apply of each, in the same run. The
//! hosts are incusd in network namespaces of this machine, built and torn down by the repo's
//! `tests/support/incus.sh` (root, a checkout of fleet). The gateways run the openclaw-base
//! recipe's image (built once, then cached).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use miette::{miette, IntoDiagnostic};

use super::kit::{apply_in_process, cli_apply, free_port, ms};
use crate::cli::loaded::runtime;
use crate::engine::Goal;
use crate::layout::Layout;

pub struct HostsBench {
    pub hosts: usize,
    pub runs: usize,
}

/// The support script of the checkout this binary was built from.
fn script() -> miette::Result<PathBuf> {
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/incus.sh");
    s.is_file()
        .then_some(s.clone())
        .ok_or_else(|| miette!("{} is missing: run this bench from a checkout of fleet", s.display()))
}

fn sh(args: &[&str]) -> miette::Result<String> {
    let out = Command::new(script()?).args(args).output().into_diagnostic()?;
    if !out.status.success() {
        return Err(miette!("incus.sh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Host i: an incusd in namespace `fleetB<i>`, at 10.213.(40+i).2.
struct Host {
    dir: String,
    ns: String,
    net: u8,
}

impl Host {
    fn up(i: usize) -> miette::Result<Host> {
        let h = Host { dir: format!("/var/lib/fleet-bench-host-{i}"), ns: format!("fleetB{i}"), net: 40 + i as u8 };
        let _ = sh(&["remote-down", &h.dir, &h.ns, "purge"]);
        sh(&["remote-up", &h.dir, &h.ns, &h.net.to_string()])?;
        Ok(h)
    }
    /// A fresh trust token, written to `file` (0600) for `trust-token="file:…"`.
    fn token_into(&self, file: &Path) -> miette::Result<()> {
        let out = Command::new("incus")
            .args(["config", "trust", "add", "fleet", "-q"])
            .env("INCUS_DIR", &self.dir)
            .output()
            .into_diagnostic()?;
        if !out.status.success() {
            return Err(miette!("incus config trust add: {}", String::from_utf8_lossy(&out.stderr)));
        }
        crate::fsutil::write_atomic(file, &out.stdout, 0o600).into_diagnostic()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = sh(&["remote-down", &self.dir, &self.ns, "purge"]);
    }
}

/// Three gateways with two agents each, spread over `hosts` (gateway i on host i % len).
fn fleet(dir: &Path, hosts: &[Host], proxy: u16, ports: &[u16; 3]) -> miette::Result<String> {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/openclaw-base.kdl");
    let mut s = format!(
        "fleet \"bench-hosts\" {{ parallelism 16 }}\nimage \"openclaw-base\" recipe=\"{}\"\nhost \"local\" runtime=\"process\"\n\
         litellm host=\"local\" port={proxy} bind=\"10.213.{}.1\"\n\
         provider \"demo\" type=\"mock\" {{ model \"demo-small\" response=\"Hello from the demo model.\" }}\n",
        recipe.display(),
        hosts[0].net
    );
    for (i, h) in hosts.iter().enumerate() {
        let token = dir.join(format!("token-{i}"));
        h.token_into(&token)?;
        s += &format!(
            "host \"h{i}\" runtime=\"incus\" address=\"https://10.213.{}.2:8443\" trust-token=\"file:{}\" arch=\"amd64\"\n",
            h.net,
            token.display()
        );
    }
    for (g, port) in ports.iter().enumerate() {
        s += &format!("gateway \"g{g}\" host=\"h{}\" image=\"openclaw-base\" port={port}\n", g % hosts.len());
        for a in 0..2 {
            s += &format!("agent \"a{g}-{a}\" gateway=\"g{g}\" model=\"demo-small\"\n");
        }
    }
    Ok(s)
}

pub fn run(b: HostsBench) -> miette::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(miette!("fleet bench hosts builds network namespaces: run it as root"));
    }
    let hosts: Vec<Host> = (0..b.hosts.max(1)).map(Host::up).collect::<miette::Result<_>>()?;
    let rt = runtime()?;
    let ports = [free_port()?, free_port()?, free_port()?];
    println!("fleet bench hosts --hosts {} --runs {}\n", hosts.len(), b.runs);
    println!("| fleet | cold apply | no-op apply (`fleet apply`, median of {}) |", b.runs);
    println!("|---|---|---|");
    let mut cold = Vec::new();
    for spread in [&hosts[..1], &hosts[..]] {
        let dir = tempfile::tempdir().into_diagnostic()?;
        let file = dir.path().join("fleet.kdl");
        std::fs::write(&file, fleet(dir.path(), spread, free_port()?, &ports)?).into_diagnostic()?;
        let data = dir.path().join("data");
        let layout = Layout::resolve("bench-hosts", None, Some(&data));
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let took = t.elapsed();
        let noop = cli_apply(b.runs, &data, &file)?;
        println!("| 3 gateways × 2 agents on {} host(s) | {} | {} |", spread.len(), ms(took), ms(noop));
        cold.push(took);
        apply_in_process(&rt, &file, &layout, Goal::Destroy)?;
    }
    println!(
        "\nratio, cold apply on {} hosts / on 1 host: {:.2}",
        hosts.len(),
        cold[1].as_secs_f64() / cold[0].as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
