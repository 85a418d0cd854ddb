//! `fleet bench plan`: validate, plan and apply a generated fleet of N agents.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use miette::{miette, IntoDiagnostic};

use crate::engine;
use crate::exec::{Reporter, StepOutcome};
use crate::layout::Layout;
use crate::plan::Action;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Validate, plan from empty, apply cold and apply with no changes, on a generated fleet
    Plan {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Repetitions for the timings that are repeated (median reported)
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
}

struct Quiet;
impl Reporter for Quiet {
    fn started(&self, _: &str, _: Action) {}
    fn finished(&self, _: &StepOutcome) {}
}

pub fn generated_fleet(agents: usize) -> String {
    let mut s = String::from(
        "fleet \"bench\" { parallelism 8 }\n\
         provider \"demo\" type=\"mock\" {\n    model \"demo-small\"\n    model \"demo-large\"\n    model \"demo-tiny\"\n}\n\
         gateway \"main\"\n",
    );
    let models = ["demo-small", "demo-large", "demo-tiny"];
    for i in 0..agents {
        let _ = writeln!(
            s,
            "agent \"agent-{i:04}\" model=\"{}\" {{ fallback \"{}\"; heartbeat every=\"30m\" }}",
            models[i % 3],
            models[(i + 1) % 3]
        );
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_n(runs: usize, mut f: impl FnMut() -> miette::Result<()>) -> miette::Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    Ok(median(v))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(cmd: BenchCmd) -> miette::Result<ExitCode> {
    let BenchCmd::Plan { agents, runs } = cmd;
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    std::fs::write(&file, generated_fleet(agents)).into_diagnostic()?;
    let data = dir.path().join("data");
    let layout = Layout::resolve("bench", None, Some(&data));

    let validate = time_n(runs, || crate::spec::load(&file).map(drop).map_err(miette::Report::new))?;
    let spec = crate::spec::load(&file)?;
    let rt = super::runtime()?;
    let plan_empty =
        time_n(runs, || rt.block_on(engine::prepare(&spec, &layout, None, engine::Goal::Converge)).map(drop))?;

    let t = Instant::now();
    let store = engine::open_locked(&layout, "bench")?;
    let p = rt.block_on(engine::prepare(&spec, &layout, Some(&store), engine::Goal::Converge))?;
    let steps = p.plan.changes.len();
    let summary = rt.block_on(engine::execute(&p, &store, spec.parallelism, Arc::new(Quiet)))?;
    store.unlock().into_diagnostic()?;
    drop(store);
    let cold = t.elapsed();
    if !summary.success() {
        return Err(miette!("the cold apply failed: {} steps failed", summary.failed()));
    }

    let noop_inproc = time_n(runs, || {
        let spec = crate::spec::load(&file)?;
        let store = engine::open_locked(&layout, "bench")?;
        let p = rt.block_on(engine::prepare(&spec, &layout, Some(&store), engine::Goal::Converge))?;
        store.unlock().into_diagnostic()?;
        if !p.plan.is_empty() {
            return Err(miette!("a converged fleet planned {} changes", p.plan.changes.len()));
        }
        Ok(())
    })?;

    let exe = std::env::current_exe().into_diagnostic()?;
    let noop_cli = time_n(runs, || {
        let status = Command::new(&exe)
            .args(["apply", "--data-dir"])
            .arg(&data)
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .into_diagnostic()?;
        status.success().then_some(()).ok_or_else(|| miette!("fleet apply exited with {status}"))
    })?;
    let spawn_floor = time_n(runs, || {
        Command::new(&exe).arg("--version").stdout(Stdio::null()).status().into_diagnostic().map(drop)
    })?;

    println!("fleet bench plan --agents {agents} --runs {runs}  ({} resources, {steps} steps cold)\n", p.desired.len());
    println!("| measurement | time |");
    println!("|---|---|");
    println!("| validate (parse + check) | {} |", ms(validate));
    println!("| plan from empty | {} |", ms(plan_empty));
    println!("| cold apply ({steps} creates, -j {}) | {} |", spec.parallelism, ms(cold));
    println!("| no-op apply, in process (load + lock + state + observe + diff) | {} |", ms(noop_inproc));
    println!("| no-op apply, `fleet apply` end to end | {} |", ms(noop_cli));
    println!("| process spawn floor (`fleet --version`) | {} |", ms(spawn_floor));
    let goal = Duration::from_millis(500);
    println!(
        "\nno-op apply end to end is {:.2}× the 0.5 s goal ({}).",
        noop_cli.as_secs_f64() / goal.as_secs_f64(),
        if noop_cli <= goal { "met" } else { "NOT met" }
    );
    let _ = Path::new(&data);
    Ok(ExitCode::SUCCESS)
}
