//! `litellm.install`: a LiteLLM venv in fleet's cache, shared by every fleet on the
//! machine and reused (`python3 -m venv`, `pip install 'litellm[proxy]==V' prisma==0.15.0`),
//! or an existing `litellm` the fleet file points at.

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::driver::{CacheInstall, Drift, Outputs, StepCtx};
use crate::fsutil::FileLock;
use crate::process::{path_with, run_logged};
use crate::resource::Resource;
use crate::state::Record;

/// Releases that must never be installed.
pub const REFUSED_VERSIONS: [(&str, &str); 1] = [("1.107.0", "a known-compromised release")];
/// Without prisma in the venv every auth failure is a 500 instead of a 401.
pub const PRISMA_PIN: &str = "prisma==0.15.0";
const MARKER: &str = ".fleet-installed";
/// The Prisma CLI and engines download once; past this, give up on database keys for now.
const PRISMA_GENERATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn venv_dir(cache: &Path, version: &str) -> PathBuf {
    cache.join("litellm").join(version).join("venv")
}

/// `litellm.install`: a venv fleet installs into its cache, or a `litellm` the fleet file points at.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InstallInputs {
    Path { path: PathBuf },
    Venv { version: String, venv: PathBuf },
}

impl InstallInputs {
    /// The `litellm` executable.
    pub fn exe(&self) -> PathBuf {
        match self {
            InstallInputs::Path { path } => path.clone(),
            InstallInputs::Venv { venv, .. } => venv.join("bin/litellm"),
        }
    }
}

/// The Prisma schema the litellm package ships (`lib/pythonX.Y/site-packages/litellm/proxy/`).
fn litellm_schema(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/litellm/proxy/schema.prisma"))
        .find(|p| p.is_file())
}

/// `prisma generate` for LiteLLM's schema (no database needed): without the generated client,
/// database keys fail. prisma-client-py npm-installs the Prisma CLI into ~/.cache/prisma-python
/// (where the proxy looks for it later) and runs it on the first `node` on PATH (else it
/// installs Node with nodeenv); the CLI then downloads Prisma's engines.
async fn prisma_generate(venv: &Path, log: &Path, ctx: &StepCtx) -> miette::Result<()> {
    let schema = litellm_schema(venv)
        .ok_or_else(|| miette!("no litellm/proxy/schema.prisma under {}", venv.join("lib").display()))?;
    let mut cmd = tokio::process::Command::new(venv.join("bin/prisma"));
    cmd.arg("generate")
        .arg("--schema")
        .arg(&schema)
        // Not the user's directory: prisma-client-py reads `[tool.prisma]` from ./pyproject.toml.
        .current_dir(venv)
        .env("PATH", path_with(&venv.join("bin")))
        .kill_on_drop(true);
    let say = |m: &str| ctx.progress(m);
    let outcome = tokio::time::timeout(PRISMA_GENERATE_TIMEOUT, run_logged(&say, cmd, log)).await;
    outcome.map_err(|_| miette!("timed out after {} s", PRISMA_GENERATE_TIMEOUT.as_secs()))?
}

pub struct InstallDriver;

fn installed(venv: &Path, version: &str) -> bool {
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|s| s.trim() == version) && venv.join("bin/litellm").is_file()
}

#[async_trait::async_trait]
impl CacheInstall for InstallDriver {
    async fn ensure(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let (version, venv) = match r.inputs_as::<InstallInputs>()? {
            InstallInputs::Path { path } => {
                if !path.is_file() {
                    return Err(miette!("litellm not found at {} (from `litellm {{ path … }}`)", path.display()));
                }
                return Ok(json!({"exe": path}));
            }
            InstallInputs::Venv { version, venv } => (version, venv),
        };
        let version = version.as_str();
        if let Some((_, why)) = REFUSED_VERSIONS.iter().find(|(v, _)| *v == version) {
            return Err(miette!("refusing to install litellm {version}: {why}"));
        }
        let exe = venv.join("bin/litellm");
        let parent = venv.parent().expect("venv has a parent").to_path_buf();
        let _lock = FileLock::take(&parent.join("install.lock")).await?;
        if installed(&venv, version) {
            return Ok(json!({"exe": exe}));
        }
        ctx.progress(&format!("creating a venv for litellm {version} in {}", venv.display()));
        if venv.exists() {
            std::fs::remove_dir_all(&venv).into_diagnostic()?;
        }
        let log = parent.join("install.log");
        let venv_s = venv.display().to_string();
        let mut venv_cmd = tokio::process::Command::new("python3");
        venv_cmd.args(["-m", "venv", &venv_s]);
        run_logged(&|m: &str| ctx.progress(m), venv_cmd, &log).await?;
        let pip = venv.join("bin/pip").display().to_string();
        let spec = format!("litellm[proxy]=={version}");
        ctx.progress(&format!("pip install {spec} {PRISMA_PIN} (about a minute)"));
        let mut pip_cmd = tokio::process::Command::new(&pip);
        pip_cmd.args(["install", "--no-input", &spec, PRISMA_PIN]).env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        run_logged(&|m: &str| ctx.progress(m), pip_cmd, &log).await?;
        // Best-effort: file-key fleets need no prisma, so a failure costs only database keys.
        // Its own log, so pip's output in install.log survives.
        ctx.progress("prisma generate (downloads the Prisma CLI and engines once)");
        if let Err(e) = prisma_generate(&venv, &parent.join("prisma-generate.log"), ctx).await {
            let why = crate::driver::error_chain(&e);
            ctx.progress(&format!("prisma generate failed: {why}; database keys will not work until it succeeds"));
        }
        std::fs::write(venv.join(MARKER), version).into_diagnostic()?;
        Ok(json!({"exe": exe}))
    }

    fn observe_cached(&self, prior: &Record) -> Drift {
        match prior.inputs_as::<InstallInputs>() {
            Err(_) => Drift::Replace("unreadable record".into()),
            Ok(InstallInputs::Venv { version, venv }) if !installed(&venv, &version) => {
                Drift::Replace(format!("the venv at {} is missing", venv.display()))
            }
            Ok(i) if !i.exe().is_file() => Drift::Replace(format!("{} is missing", i.exe().display())),
            Ok(_) => Drift::InSync,
        }
    }
}
