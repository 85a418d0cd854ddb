//! `fleet bench plan|proxy|gateway`: the spine, the proxy and gateways measured (`serve`: `bench_serve`).

use std::fmt::Write as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use miette::{miette, IntoDiagnostic};

mod archive;
mod hosts;
pub(crate) mod kit;
mod plugin;
mod removal;
mod serve;
mod serve_memory;
mod spend;
mod trace;

use super::loaded::runtime;
use crate::engine::{Goal, Options, Session};
use crate::layout::Layout;
use crate::resource::Address;
use kit::{apply_in_process, cli_apply, free_port, gateway_fleet, median, ms, time_n, Quiet};

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
    /// Gateways on the process runtime: cold apply of 1 gateway + N agents, agents added to a running
    /// gateway, no-op apply
    Gateway {
        /// Fleet sizes for the cold applies
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 10, 50])]
        agents: Vec<usize>,
        /// Also each size with its agents' tools in sandboxes from this image recipe
        /// (`recipes/sandbox.kdl`), against the unsandboxed cold apply of the same run
        #[arg(long)]
        sandbox: Option<std::path::PathBuf>,
    },
    /// The LiteLLM proxy: cold start to ready, key minted → first accepted request, no-op apply while it runs
    Proxy {
        /// Keys minted one after another (median reported)
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    /// The daemon: routing overhead against chat.send, SSE fan-out, concurrent POSTs, memory
    Serve {
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Messages timed through the daemon and straight through the gateway, each
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Event-stream clients
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 1000)]
        posts: usize,
        #[arg(long, default_value_t = 20)]
        concurrency: usize,
        /// Instead: the daemon's memory with this many event-stream clients that read nothing
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// (--stalled) large messages stored before the clients come, and as many while they stall
        #[arg(long, default_value_t = 20)]
        big_messages: usize,
        /// (--stalled) each large message's size in KB
        #[arg(long, default_value_t = 1000)]
        message_kb: usize,
    },
    /// The same three Incus gateways (2 agents each) on one other host, then one per host on three:
    /// cold and no-op apply (root; hosts are incusd in network namespaces of this machine)
    Hosts {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// No-op applies timed (median reported)
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The trace plugin's cost inside the gateway: the same turns without and with it
    Plugin {
        #[arg(long, default_value_t = 50)]
        turns: usize,
    },
    /// `fleet gc --dry-run` on a converged process fleet with nothing to collect (and `fleet plan`, the
    /// anchor, on the same fleet)
    Gc {
        #[arg(long, default_value_t = 50)]
        agents: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// What the proxy's budget check adds to a request: agents with and without a budget, alternated
    Spend {
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Ledger lines (a month of calls) written before the run
        #[arg(long, default_value_t = 10000)]
        history: usize,
    },
    /// Removing most of a gateway's agents in one apply, and the batched config.patch path measured
    /// on the gateway
    Removal {
        #[arg(long, default_value_t = 61)]
        agents: usize,
        #[arg(long, default_value_t = 50)]
        remove: usize,
    },
    /// Archive and restore of one agent with a large workspace (renames, not copies)
    Archive {
        /// Workspace size in MB (1-MB files)
        #[arg(long, default_value_t = 100)]
        mb: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Where to make the agent (the archive is on the same filesystem) [default: $TMPDIR]
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Traces: ingest over HTTP (concurrent senders, batches), reads of the newest page of a large store
    Trace {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Events stored for the read benchmark
        #[arg(long, default_value_t = 1_000_000)]
        stored: usize,
        /// Hourly buckets they are spread over
        #[arg(long, default_value_t = 48)]
        hours: usize,
    },
}

/// A keys-only fleet (no gateway: the agents get LiteLLM keys and env files) of `agents` agents, for the
/// spine's and the proxy's benchmarks; the gateway benchmark has its own fleet.
pub fn generated_fleet(agents: usize, port: u16) -> String {
    let mut s = format!("litellm port={port}\n");
    s.push_str(
        "fleet \"bench\" { parallelism 8 }\n\
         provider \"demo\" type=\"mock\" {\n    model \"demo-small\"\n    model \"demo-large\"\n    model \"demo-tiny\"\n}\n",
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

pub fn run(cmd: BenchCmd) -> miette::Result<ExitCode> {
    match cmd {
        BenchCmd::Plan { agents, runs } => plan_bench(agents, runs),
        BenchCmd::Proxy { samples } => proxy_bench(samples),
        BenchCmd::Gateway { agents, sandbox } => gateway_bench(&agents, sandbox.as_deref()),
        BenchCmd::Serve { agents, stalled, big_messages, message_kb, .. } if stalled > 0 => {
            serve_memory::run(serve_memory::StalledBench {
                agents: agents.min(5),
                clients: stalled,
                messages: big_messages,
                message_kb,
            })
        }
        BenchCmd::Serve { agents, messages, clients, posts, concurrency, .. } => {
            serve::run(serve::ServeBench { agents, messages, clients, posts, concurrency })
        }
        BenchCmd::Plugin { turns } => plugin::run(turns),
        BenchCmd::Hosts { hosts, runs } => hosts::run(hosts::HostsBench { hosts, runs }),
        BenchCmd::Gc { agents, runs } => gc_bench(agents, runs),
        BenchCmd::Spend { requests, history } => spend::run(spend::SpendBench { requests, history }),
        BenchCmd::Removal { agents, remove } => removal::run(removal::RemovalBench { agents, remove }),
        BenchCmd::Archive { mb, runs, dir } => archive::run(archive::ArchiveBench { mb, runs, dir }),
        BenchCmd::Trace { events, senders, batch, stored, hours } => {
            trace::run(trace::TraceBench { events, senders, batch, stored, hours })
        }
    }
}

fn plan_bench(agents: usize, runs: usize) -> miette::Result<ExitCode> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    std::fs::write(&file, generated_fleet(agents, free_port()?)).into_diagnostic()?;
    let data = dir.path().join("data");
    let layout = Layout::resolve("bench", None, Some(&data));

    let validate = time_n(runs, || crate::fleetfile::load(&file).map(drop).map_err(miette::Report::new))?;
    let spec = crate::fleetfile::load(&file)?;
    let rt = runtime()?;
    let plan_empty = time_n(runs, || {
        let session = Session::read_only(&layout)?;
        rt.block_on(session.plan(&spec, &layout, Goal::Converge, &Options::default())).map(drop)
    })?;

    let t = Instant::now();
    let session = Session::open(&layout, "bench")?;
    let p = rt.block_on(session.plan(&spec, &layout, Goal::Converge, &Options::default()))?;
    let steps = p.plan.changes.len();
    let summary = rt.block_on(session.apply(&p, spec.parallelism, Arc::new(Quiet)))?;
    drop(session);
    let cold = t.elapsed();
    if !summary.success() {
        return Err(miette!("the cold apply failed: {} steps failed", summary.failed()));
    }

    let noop_inproc = time_n(runs, || {
        let spec = crate::fleetfile::load(&file)?;
        let session = Session::open(&layout, "bench")?;
        let p = rt.block_on(session.plan(&spec, &layout, Goal::Converge, &Options::default()))?;
        if !p.plan.is_empty() {
            return Err(miette!("a converged fleet planned {} changes", p.plan.changes.len()));
        }
        Ok(())
    })?;

    let exe = std::env::current_exe().into_diagnostic()?;
    let noop_cli = cli_apply(runs, &data, &file)?;
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
    apply_in_process(&rt, &file, &layout, Goal::Destroy)?;
    Ok(ExitCode::SUCCESS)
}

fn proxy_bench(samples: usize) -> miette::Result<ExitCode> {
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    let port = free_port()?;
    let base = generated_fleet(1, port);
    std::fs::write(&file, &base).into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let rt = runtime()?;
    let url = format!("http://127.0.0.1:{port}");
    let result = (|| -> miette::Result<()> {
        // First apply: install (or reuse) the venv and start the proxy.
        let t = Instant::now();
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        let first = t.elapsed();

        // Cold starts: kill the proxy, re-apply (observe → restart → ready).
        let mut cold = Vec::new();
        for _ in 0..3 {
            let pid = proxy_pid(&layout)?;
            pid.stop(Duration::from_secs(15));
            let t = Instant::now();
            apply_in_process(&rt, &file, &layout, Goal::Converge)?;
            cold.push(t.elapsed());
        }

        // Keys: add one agent at a time; time the apply and then the wait for the first 200.
        let pid = proxy_pid(&layout)?;
        let client = reqwest::Client::new();
        let (mut applies, mut first_ok) = (Vec::new(), Vec::new());
        let mut text = base.clone();
        for i in 0..samples {
            let agent = format!("extra-{i:03}");
            text.push_str(&format!("agent \"{agent}\" model=\"demo-small\"\n"));
            std::fs::write(&file, &text).into_diagnostic()?;
            let t = Instant::now();
            apply_in_process(&rt, &file, &layout, Goal::Converge)?;
            applies.push(t.elapsed());
            let key = crate::litellm::keys::read_env_key(&layout.agent_env(&agent)).ok_or_else(|| miette!("no key"))?;
            let t = Instant::now();
            loop {
                let status = rt.block_on(
                    client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(key.expose())
                        .json(&serde_json::json!({"model": "demo-small", "messages": [{"role": "user", "content": "hi"}]}))
                        .send(),
                );
                if status.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(miette!("the new key was not accepted within 30 s"));
                }
            }
            first_ok.push(t.elapsed());
        }
        if proxy_pid(&layout)? != pid {
            return Err(miette!("minting keys restarted the proxy"));
        }

        // No-op apply while the proxy runs, end to end.
        let noop = cli_apply(7, &layout.data_dir, &file)?;
        if proxy_pid(&layout)? != pid {
            return Err(miette!("a no-op apply restarted the proxy"));
        }

        println!("fleet bench proxy --samples {samples}\n");
        println!("| measurement | time |");
        println!("|---|---|");
        println!("| first apply (venv reused, proxy cold start) | {} |", ms(first));
        println!("| proxy killed → re-apply → ready (median of 3) | {} |", ms(median(cold)));
        println!("| apply minting one key, proxy running (median of {samples}) | {} |", ms(median(applies)));
        println!("| key minted → first accepted request (median of {samples}) | {} |", ms(median(first_ok)));
        println!("| no-op apply with the proxy running, end to end (median of 7) | {} |", ms(noop));
        println!("\nproxy pid unchanged across {samples} mints and 7 no-op applies.");
        Ok(())
    })();
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    result?;
    cleanup?;
    Ok(ExitCode::SUCCESS)
}

fn gc_bench(n: usize, runs: usize) -> miette::Result<ExitCode> {
    let rt = runtime()?;
    let dir = tempfile::tempdir().into_diagnostic()?;
    let file = dir.path().join("fleet.kdl");
    std::fs::write(&file, gateway_fleet(n, free_port()?, free_port()?)).into_diagnostic()?;
    let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
    let exe = std::env::current_exe().into_diagnostic()?;
    let run = |args: &[&str]| -> miette::Result<Duration> {
        time_n(runs, || {
            let out = Command::new(&exe)
                .args(args)
                .arg("--data-dir")
                .arg(&layout.data_dir)
                .arg(&file)
                .stdout(Stdio::piped())
                .output()
                .into_diagnostic()?;
            let text = String::from_utf8_lossy(&out.stdout);
            (out.status.success() && (args[0] != "gc" || text.contains("No orphans")))
                .then_some(())
                .ok_or_else(|| miette!("fleet {} found something: {text}", args.join(" ")))
        })
    };
    let result = (|| -> miette::Result<(Duration, Duration)> {
        apply_in_process(&rt, &file, &layout, Goal::Converge)?;
        Ok((run(&["gc", "--dry-run"])?, run(&["plan"])?))
    })();
    let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
    let (gc, plan) = result?;
    cleanup?;
    println!("fleet bench gc --agents {n} --runs {runs}: a converged process fleet, nothing to collect");
    println!("| measurement | median of {runs} |\n|---|---|");
    println!(
        "| `fleet gc --dry-run` (inventory: processes, key file, the gateway's agents, workspaces) | {} |",
        ms(gc)
    );
    println!("| anchor: `fleet plan` on the same fleet | {} |", ms(plan));
    println!("| ratio gc / plan | {:.2} |", gc.as_secs_f64() / plan.as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn gateway_bench(sizes: &[usize], sandbox: Option<&std::path::Path>) -> miette::Result<ExitCode> {
    let sizes_list = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    match sandbox {
        Some(r) => println!("fleet bench gateway --agents {sizes_list} --sandbox {}\n", r.display()),
        None => println!("fleet bench gateway --agents {sizes_list}\n"),
    }
    println!("| measurement | time |");
    println!("|---|---|");
    let rt = runtime()?;
    let mut cold_times = Vec::new();
    for &n in sizes {
        let dir = tempfile::tempdir().into_diagnostic()?;
        let file = dir.path().join("fleet.kdl");
        let (pp, gp) = (free_port()?, free_port()?);
        std::fs::write(&file, gateway_fleet(n, pp, gp)).into_diagnostic()?;
        let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
        let result = (|| -> miette::Result<()> {
            let t = Instant::now();
            apply_in_process(&rt, &file, &layout, Goal::Converge)?;
            let cold = t.elapsed();
            cold_times.push((n, cold));
            println!(
                "| cold apply: 1 gateway + {n} agents (proxy, gateway, one patch creating them, files, wakes) | {} |",
                ms(cold)
            );
            if n == *sizes.iter().max().unwrap_or(&n) {
                let noop = cli_apply(5, &layout.data_dir, &file)?;
                println!("| no-op apply with {n} agents, end to end (median of 5) | {} |", ms(noop));
                // Agents added to the running gateway.
                let mut current = n;
                for add in [1usize, 10] {
                    std::fs::write(&file, gateway_fleet(current + add, pp, gp)).into_diagnostic()?;
                    let t = Instant::now();
                    apply_in_process(&rt, &file, &layout, Goal::Converge)?;
                    let took = t.elapsed();
                    println!(
                        "| add {add} agent(s) to the running gateway ({current} → {}) | {} ({} per agent; {}) |",
                        current + add,
                        ms(took),
                        ms(took / add as u32),
                        last_run_breakdown(&layout)?
                    );
                    current += add;
                }
            }
            Ok(())
        })();
        let t = Instant::now();
        let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
        println!("| destroy ({n} agents and more) | {} |", ms(t.elapsed()));
        result?;
        cleanup?;
    }
    if let Some(recipe) = sandbox {
        let recipe = std::fs::canonicalize(recipe).into_diagnostic()?;
        for &(n, plain) in &cold_times {
            let dir = tempfile::tempdir().into_diagnostic()?;
            let file = dir.path().join("fleet.kdl");
            let gp = free_port()?;
            let fleet = gateway_fleet(n, free_port()?, gp).replace(
                &format!("gateway \"main\" port={gp}\n"),
                &format!(
                    "image \"sandbox\" {{ recipe \"{}\"; }}\ngateway \"main\" port={gp} {{ sandbox \"all\" image=\"sandbox\"; }}\n",
                    recipe.display()
                ),
            );
            std::fs::write(&file, fleet).into_diagnostic()?;
            let layout = Layout::resolve("bench", None, Some(&dir.path().join("data")));
            let t = Instant::now();
            let result = apply_in_process(&rt, &file, &layout, Goal::Converge);
            let took = t.elapsed();
            let cleanup = apply_in_process(&rt, &file, &layout, Goal::Destroy);
            result?;
            cleanup?;
            println!(
                "| cold apply, tools sandboxed: 1 gateway + {n} agents (the image cached; imported into the gateway's store; each wake makes its agent's sandbox) | {} ({:.2} × unsandboxed) |",
                ms(took),
                took.as_secs_f64() / plain.as_secs_f64()
            );
        }
    }
    if let (Some((n0, t0)), Some((n1, t1))) = (cold_times.first(), cold_times.last()) {
        if n1 > n0 {
            let per = (t1.as_secs_f64() - t0.as_secs_f64()) / (*n1 - *n0) as f64;
            println!(
                "\ncost per extra agent in a cold apply: {:.2} s ({n0} → {n1} agents); anchor: taOS 33 s per agent.",
                per
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the last run's time went: the patch, the slowest agent's files, the slowest wake.
fn last_run_breakdown(layout: &Layout) -> miette::Result<String> {
    let store = crate::state::Store::open(&layout.state_db()).into_diagnostic()?;
    let run = store.runs(1).into_diagnostic()?.first().map(|r| r.id).ok_or_else(|| miette::miette!("no run"))?;
    let steps = store.steps(run).into_diagnostic()?;
    let slowest = |of: &dyn Fn(&Address) -> bool| {
        steps.iter().filter(|s| s.address.parse().is_ok_and(|a| of(&a))).map(|s| s.duration_ms).max().unwrap_or(0)
    };
    Ok(format!(
        "patch {} ms, slowest agent's files {} ms, slowest wake {} ms",
        slowest(&|a| *a == Address::GatewayModels("main".into())),
        slowest(&|a| matches!(a, Address::Agent(_))),
        slowest(&|a| matches!(a, Address::Wake(_)))
    ))
}

fn proxy_pid(layout: &Layout) -> miette::Result<crate::process::Pid> {
    let text = std::fs::read_to_string(layout.litellm_dir().join("proxy.pid")).into_diagnostic()?;
    let v: serde_json::Value = serde_json::from_str(&text).into_diagnostic()?;
    serde_json::from_value(v["pid"].clone()).into_diagnostic()
}
