//! The command line: parse arguments, call the core, print. Nothing else.

mod apply;
mod bench;
mod chat;
mod image;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use miette::miette;

use crate::engine::Goal;
use crate::layout::Layout;
use crate::spec::{self, FleetSpec};

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
        /// Machine-readable plan on stdout
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error
        #[arg(long)]
        detailed_exitcode: bool,
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
    },
    /// Send a message to an agent through its gateway and print the reply
    Chat {
        agent: String,
        message: String,
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
    },
    /// Print the resource graph as Graphviz DOT
    Graph { path: Option<PathBuf> },
    /// List recorded resources and recent runs
    State { path: Option<PathBuf> },
    /// Remove the apply lock left by a process that cannot release it (e.g. on another host)
    ForceUnlock { path: Option<PathBuf> },
    /// Images: build from recipes
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Measure fleet itself
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// A loaded fleet file and where its data lives.
pub struct Loaded {
    pub spec: FleetSpec,
    pub layout: Layout,
}

pub fn load(path: Option<&Path>, data_dir: Option<&Path>) -> miette::Result<Loaded> {
    let file = spec::locate(path).map_err(|e| miette!("{e}"))?;
    let spec = spec::load(&file)?;
    let layout = Layout::resolve(&spec.name, spec.data_dir.as_deref(), data_dir);
    Ok(Loaded { spec, layout })
}

pub fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    use miette::IntoDiagnostic;
    tokio::runtime::Builder::new_multi_thread().enable_all().build().into_diagnostic()
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

pub fn main() -> ExitCode {
    init_miette();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let data_dir = cli.data_dir.as_deref();
    let result: miette::Result<ExitCode> = match cli.cmd {
        Cmd::Validate { path } => load(path.as_deref(), data_dir).map(|l| {
            println!(
                "{}: valid ({} agents, {} gateways, {} providers)",
                l.spec.name,
                l.spec.agents.len(),
                l.spec.gateways.len(),
                l.spec.providers.len()
            );
            ExitCode::SUCCESS
        }),
        Cmd::Plan { path, json, detailed_exitcode } => {
            apply::plan(path.as_deref(), data_dir, Goal::Converge, json, detailed_exitcode)
        }
        Cmd::Apply { path, jobs, dry_run, overwrite } => match dry_run {
            true => apply::plan(path.as_deref(), data_dir, Goal::Converge, false, false),
            false => apply::apply(path.as_deref(), data_dir, Goal::Converge, jobs, overwrite),
        },
        Cmd::Chat { agent, message, file, timeout } => chat::run(file.as_deref(), data_dir, &agent, &message, timeout),
        Cmd::Destroy { path, jobs, dry_run } => match dry_run {
            true => apply::plan(path.as_deref(), data_dir, Goal::Destroy, false, false),
            false => apply::apply(path.as_deref(), data_dir, Goal::Destroy, jobs, false),
        },
        Cmd::Graph { path } => load(path.as_deref(), data_dir).map(|l| {
            let d = crate::resource::desired(&l.spec, &l.layout);
            print!("{}", crate::plan::dot::dot(&l.spec.name, &d));
            ExitCode::SUCCESS
        }),
        Cmd::State { path } => apply::state(path.as_deref(), data_dir),
        Cmd::ForceUnlock { path } => apply::force_unlock(path.as_deref(), data_dir),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Image(c) => image::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::from(1)
        }
    }
}
