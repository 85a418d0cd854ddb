//! `litellm.install`: a LiteLLM venv in fleet's cache, shared by every fleet on the
//! machine and reused (`python3 -m venv`, `pip install 'litellm[proxy]==V' prisma==0.15.0`),
//! or an existing `litellm` the fleet file points at.

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use crate::exec::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fsutil::FileLock;
use crate::process::run_logged;
use crate::resource::Resource;
use crate::state::Record;

/// Releases that must never be installed.
pub const REFUSED_VERSIONS: [(&str, &str); 1] = [("1.107.0", "a known-compromised release")];
/// Without prisma in the venv every auth failure is a 500 instead of a 401.
pub const PRISMA_PIN: &str = "prisma==0.15.0";
const MARKER: &str = ".fleet-installed";

pub fn venv_dir(cache: &Path, version: &str) -> PathBuf {
    cache.join("litellm").join(version).join("venv")
}

pub fn exe_of(inputs: &Value) -> Option<PathBuf> {
    if let Some(p) = inputs.get("path").and_then(Value::as_str) {
        return Some(PathBuf::from(p));
    }
    inputs.get("venv").and_then(Value::as_str).map(|v| Path::new(v).join("bin/litellm"))
}

pub struct InstallDriver;

fn installed(venv: &Path, version: &str) -> bool {
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|s| s.trim() == version) && venv.join("bin/litellm").is_file()
}

impl InstallDriver {
    async fn ensure(r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        if let Some(path) = r.inputs.get("path").and_then(Value::as_str) {
            let p = Path::new(path);
            if !p.is_file() {
                return Err(miette!("litellm not found at {path} (from `litellm {{ path … }}`)"));
            }
            return Ok(json!({"exe": path}));
        }
        let version = r.inputs["version"].as_str().ok_or_else(|| miette!("no version"))?;
        if let Some((_, why)) = REFUSED_VERSIONS.iter().find(|(v, _)| *v == version) {
            return Err(miette!("refusing to install litellm {version}: {why}"));
        }
        let venv = PathBuf::from(r.inputs["venv"].as_str().ok_or_else(|| miette!("no venv"))?);
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
        run_logged(ctx, venv_cmd, &log).await?;
        let pip = venv.join("bin/pip").display().to_string();
        let spec = format!("litellm[proxy]=={version}");
        ctx.progress(&format!("pip install {spec} {PRISMA_PIN} (about a minute)"));
        let mut pip_cmd = tokio::process::Command::new(&pip);
        pip_cmd.args(["install", "--no-input", &spec, PRISMA_PIN]).env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        run_logged(ctx, pip_cmd, &log).await?;
        std::fs::write(venv.join(MARKER), version).into_diagnostic()?;
        Ok(json!({"exe": exe}))
    }
}

#[async_trait::async_trait]
impl Driver for InstallDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        match (prior.inputs.get("venv").and_then(Value::as_str), prior.inputs.get("version").and_then(Value::as_str)) {
            (Some(venv), Some(v)) if !installed(Path::new(venv), v) => {
                Drift::Replace(format!("the venv at {venv} is missing"))
            }
            _ => match exe_of(&prior.inputs) {
                Some(exe) if !exe.is_file() => Drift::Replace(format!("{} is missing", exe.display())),
                _ => Drift::InSync,
            },
        }
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    async fn update(&self, r: &Resource, _prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    /// The venv is shared through the cache: other fleets may use it. Nothing to remove.
    async fn delete(&self, _prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}
