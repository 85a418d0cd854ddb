//! `fleet image build`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::loaded::runtime;
use crate::fleetfile::Arch;
use crate::image::build::{build, Options};
use crate::layout::Layout;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build an image from a recipe: an Incus unified image tarball, its .sha256 and a manifest
    Build {
        recipe: PathBuf,
        /// amd64 or arm64 [default: this machine's]
        #[arg(long)]
        arch: Option<String>,
        /// Where to put the artifacts
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Rebuild every layer, ignoring cached bases and artifacts
        #[arg(long)]
        no_cache: bool,
    },
    /// Record the recipe's resolved npm tree (versions + integrity) beside it, for reproducible builds
    Lock { recipe: PathBuf },
}

pub fn run(cmd: ImageCmd) -> miette::Result<ExitCode> {
    let (recipe, arch, out, no_cache) = match cmd {
        ImageCmd::Build { recipe, arch, out, no_cache } => (recipe, arch, out, no_cache),
        ImageCmd::Lock { recipe } => {
            let r = crate::image::recipe::load(&recipe)?;
            let cache = Layout::resolve("", None, None).cache_dir;
            let path =
                runtime()?.block_on(crate::image::build::lock(&recipe, &r, &cache, &|m: &str| eprintln!("  … {m}")))?;
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).map_err(|e| miette::miette!("{e}"))?)
                    .map_err(|e| miette::miette!("{e}"))?;
            let n = v["packages"].as_object().map(|p| p.len().saturating_sub(1)).unwrap_or(0);
            println!("{} ({n} packages pinned with their integrity)", path.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let r = crate::image::recipe::load(&recipe)?;
    let arch = match arch {
        None => Arch::native(),
        Some(a) => Arch::parse(&a).ok_or_else(|| miette::miette!("unknown architecture {a:?}; use amd64 or arm64"))?,
    };
    let cache = Layout::resolve("", None, None).cache_dir;
    let o = Options { arch, out, no_cache, cache };
    let t = std::time::Instant::now();
    let built = runtime()?.block_on(build(&r, &o, &|m: &str| eprintln!("  … {m}")))?;
    for (phase, d) in &built.phases {
        eprintln!("  {phase:16} {:.1} s", d.as_secs_f64());
    }
    println!(
        "{}{}\nsha256 {}\n{:.1} MB in {:.1} s",
        built.tarball.display(),
        if built.cached { " (cached)" } else { "" },
        built.sha256,
        built.size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
