//! The command line: parse arguments, call the core, print. Nothing else.

mod apply;
mod archive;
pub(crate) mod bench;
mod chat;
mod gc;
mod image;
mod loaded;
mod progress;
mod serve;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::engine::{Goal, Options};
use crate::resource::Address;

#[derive(Parser)]
#[command(name = "fleet", version, about = "One declarative file → a running fleet of OpenClaw agents")]
pub struct Cli {
    /// Where this fleet's state, homes, configs and keys live
    /// [default: $XDG_DATA_HOME/fleet/<fleet name>]
    #[arg(long, global = true, env = "FLEET_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// More logging (-v info, -vv debug); or set RUST_LOG
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a fleet file; print nothing but problems
    Validate {
        /// A fleet file, or a directory holding fleet.kdl or fleet.toml [default: .]
        path: Option<PathBuf>,
    },
    /// Show what apply would change
    Plan {
        path: Option<PathBuf>,
        /// Machine-readable plan on stdout (docs/plan-json.md)
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error
        #[arg(long)]
        detailed_exitcode: bool,
        #[command(flatten)]
        select: Select,
    },
    /// Converge the real fleet to the file
    Apply {
        path: Option<PathBuf>,
        /// At most this many steps at once [default: the file's parallelism, else 8]
        #[arg(short = 'j', long, value_name = "N")]
        jobs: Option<usize>,
        /// Plan only: the same as `fleet plan`
        #[arg(long)]
        dry_run: bool,
        /// Also replace workspace files agents edit themselves (USER.md, MEMORY.md)
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        select: Select,
    },
    /// Send a message to an agent and print the reply (through the daemon when it runs, so the
    /// conversation is kept; straight through the gateway otherwise)
    Chat {
        agent: String,
        message: String,
        /// Continue this conversation thread (the daemon keeps threads)
        #[arg(long, default_value = "main")]
        thread: String,
        /// A fleet file or its directory [default: .]
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Seconds to wait for the reply
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Remove everything the fleet's state records: stop processes, revoke keys, delete files
    Destroy {
        path: Option<PathBuf>,
        #[arg(short = 'j', long, value_name = "N")]
        jobs: Option<usize>,
        /// Show what would be removed, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Only this resource and what depends on it (repeatable)
        #[arg(long, value_name = "ADDRESS")]
        target: Vec<Address>,
    },
    /// Run the daemon in the foreground: chat routing, conversations, the status page (docs/api.md)
    Serve {
        path: Option<PathBuf>,
        /// IP:PORT to listen on [default: the file's `serve listen`, else 127.0.0.1:8700]
        #[arg(long)]
        listen: Option<String>,
        /// Print a systemd unit that runs this daemon, and exit
        #[arg(long)]
        print_unit: bool,
        /// Serve from the state in --data-dir alone, without a fleet file (how apply starts it)
        #[arg(long, hide = true)]
        from_state: bool,
        #[arg(long, hide = true)]
        fleet: Option<String>,
        /// Seconds to wait for an agent's reply before a `system` message says none came
        #[arg(long, hide = true)]
        reply_timeout: Option<u64>,
    },
    /// The fleet as the daemon sees it: gateways, agents and their status, the status page
    Status {
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Print a one-time sign-in link for the status page (good once, for two minutes)
        #[arg(long)]
        login: bool,
    },
    /// An agent's trace: messages, LLM calls, tool calls and results, heartbeats (docs/trace.md)
    Trace {
        agent: String,
        /// Only these kinds (repeatable): message_in, message_out, llm_call, tool_call, tool_result,
        /// reasoning, error, lifecycle
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only events since: a duration ago (90s, 15m, 1h, 2d) or an RFC 3339 time
        #[arg(long)]
        since: Option<String>,
        /// How many of the latest events
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep printing events as they arrive
        #[arg(long)]
        follow: bool,
        /// One envelope (JSON) per line
        #[arg(long)]
        json: bool,
        /// The agent's events the daemon refused (kept by their senders, with why) instead
        #[arg(long, conflicts_with = "follow")]
        rejected: bool,
        /// A fleet file or its directory [default: .]
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// LLM calls, tokens and cost, per agent, model or day (as the proxy priced them)
    Usage {
        path: Option<PathBuf>,
        /// Since: a duration ago (1h, 7d) or an RFC 3339 time
        #[arg(long, default_value = "1d")]
        since: String,
        #[arg(long, value_enum, default_value = "agent")]
        by: trace::By,
        #[arg(long)]
        json: bool,
    },
    /// Print the resource graph as Graphviz DOT: what needs what, and (planned as `fleet plan` would) what a run would change and the order apply walks it in
    Graph { path: Option<PathBuf> },
    /// List recorded resources and recent runs; `fleet state forget ADDRESS` for hand repairs
    #[command(args_conflicts_with_subcommands = true)]
    State {
        #[command(subcommand)]
        cmd: Option<StateCmd>,
        path: Option<PathBuf>,
    },
    /// Remove the apply lock left by a process that cannot release it (e.g. on another host)
    ForceUnlock { path: Option<PathBuf> },
    /// Find what fleet created for this fleet and no longer records (processes, keys, agents,
    /// workspaces, Incus instances), destroy each, and verify nothing is left
    Gc {
        path: Option<PathBuf>,
        /// Print the orphans, touch nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Archived agents: list, show, purge, export
    #[command(subcommand)]
    Archive(archive::ArchiveCmd),
    /// Images: build from recipes
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Measure fleet itself
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Print a shell completion script (`fleet completions bash > /etc/bash_completion.d/fleet`)
    Completions { shell: clap_complete::Shell },
}

/// Narrowing a plan, as Terraform users expect.
#[derive(Args, Default)]
struct Select {
    /// Only this resource and what it depends on, e.g. `key.alice` (repeatable)
    #[arg(long, value_name = "ADDRESS")]
    target: Vec<Address>,
    /// Delete and create this resource anew even if nothing changed (repeatable)
    #[arg(long, value_name = "ADDRESS")]
    replace: Vec<Address>,
}

impl Select {
    fn options(self, overwrite: bool) -> Options {
        Options { overwrite, targets: self.target, replace: self.replace }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn init_miette() {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        let mut opts = miette::MietteHandlerOpts::new()
            .terminal_links(false)
            .width(100)
            .break_words(false)
            .word_splitter(textwrap::WordSplitter::NoHyphenation);
        if !tty || std::env::var_os("NO_COLOR").is_some() {
            opts = opts.graphical_theme(miette::GraphicalTheme::unicode_nocolor());
        }
        Box::new(opts.build())
    }));
}

#[derive(Subcommand)]
enum StateCmd {
    /// Stop managing a resource: its record is removed from the state; nothing is stopped or
    /// deleted (for what cannot be reached any more, e.g. an agent of a gateway that is gone)
    Forget { address: Address, path: Option<PathBuf> },
}

pub fn main() -> ExitCode {
    init_miette();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let data_dir = cli.data_dir.as_deref();
    let result: miette::Result<ExitCode> = match cli.cmd {
        Cmd::Validate { path } => loaded::load(path.as_deref(), data_dir).map(|l| {
            println!(
                "{}: valid ({} agents, {} gateways, {} providers)",
                l.spec.name,
                l.spec.agents.len(),
                l.spec.gateways.len(),
                l.spec.providers.len()
            );
            // validate stays offline: it says which references it left to plan and apply.
            let refs: Vec<String> = l.spec.secret_refs().iter().map(|(_, r)| r.to_string()).collect();
            if !refs.is_empty() {
                println!("not checked (plan and apply resolve them): {}", refs.join(", "));
            }
            ExitCode::SUCCESS
        }),
        Cmd::Plan { path, json, detailed_exitcode, select } => {
            let req =
                apply::Request { path: path.as_deref(), data_dir, goal: Goal::Converge, opts: select.options(false) };
            apply::plan(req, json, detailed_exitcode)
        }
        Cmd::Apply { path, jobs, dry_run, overwrite, select } => {
            let req = apply::Request {
                path: path.as_deref(),
                data_dir,
                goal: Goal::Converge,
                opts: select.options(overwrite),
            };
            match dry_run {
                true => apply::plan(req, false, false),
                false => apply::apply(req, jobs),
            }
        }
        Cmd::Chat { agent, message, thread, file, timeout } => {
            chat::run(file.as_deref(), data_dir, &agent, &message, &thread, timeout)
        }
        Cmd::Serve { path, listen, print_unit, from_state, fleet, reply_timeout } => serve::serve(serve::ServeArgs {
            path: path.as_deref(),
            data_dir,
            listen,
            from_state,
            fleet,
            reply_timeout,
            print_unit,
        }),
        Cmd::Status { path, json, login } => serve::status(path.as_deref(), data_dir, json, login),
        Cmd::Trace { agent, rejected: true, json, file, .. } => {
            trace::rejected(file.as_deref(), data_dir, &agent, json)
        }
        Cmd::Trace { agent, kinds, since, limit, follow, json, file, .. } => trace::trace(trace::TraceArgs {
            path: file.as_deref(),
            data_dir,
            agent: &agent,
            kinds,
            since: since.as_deref(),
            limit,
            follow,
            json,
        }),
        Cmd::Usage { path, since, by, json } => trace::usage(path.as_deref(), data_dir, Some(&since), by, json),
        Cmd::Destroy { path, jobs, dry_run, target } => {
            let opts = Options { targets: target, ..Options::default() };
            let req = apply::Request { path: path.as_deref(), data_dir, goal: Goal::Destroy, opts };
            match dry_run {
                true => apply::plan(req, false, false),
                false => apply::apply(req, jobs),
            }
        }
        Cmd::Graph { path } => apply::graph(path.as_deref(), data_dir),
        Cmd::State { cmd: None, path } => apply::state(path.as_deref(), data_dir),
        Cmd::State { cmd: Some(StateCmd::Forget { address, path }), .. } => {
            apply::forget(path.as_deref(), data_dir, &address)
        }
        Cmd::ForceUnlock { path } => apply::force_unlock(path.as_deref(), data_dir),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Image(c) => image::run(c),
        Cmd::Archive(c) => archive::run(c, data_dir),
        Cmd::Gc { path, dry_run, json } => gc::gc(path.as_deref(), data_dir, dry_run, json),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "fleet", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::from(1)
        }
    }
}
