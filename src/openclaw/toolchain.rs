//! `openclaw.toolchain`: Node (the npm registry's `node-linux-<arch>` package,
//! integrity-checked), npm (likewise) and `openclaw@<version>` installed by that
//! npm, all in fleet's cache, shared by every fleet and installed once.

use std::path::Path;

use miette::{miette, IntoDiagnostic};
use serde_json::{json, Value};

use crate::driver::{CacheInstall, Drift, Outputs, StepCtx};
use crate::fsutil::FileLock;
use crate::process::run_logged;
use crate::resource::Resource;
use crate::state::Record;

pub use crate::runtime::toolchain::NPM_VERSION;
/// Packages whose install scripts openclaw needs.
pub const ALLOW_SCRIPTS: [&str; 4] = ["@google/genai", "koffi", "protobufjs", "openclaw"];

pub use crate::runtime::toolchain::Toolchain;

impl Toolchain {
    /// This machine's Node, from the npm registry into the cache.
    pub async fn ensure_node(&self, say: &(dyn Fn(&str) + Sync)) -> miette::Result<()> {
        let package = crate::fleetfile::Arch::native().node_package();
        crate::npm::ensure_package(package, &self.node, &self.node_dir, say).await?;
        if !self.node_bin().is_file() {
            return Err(miette!("{package}@{} has no bin/node", self.node));
        }
        Ok(())
    }

    /// npm, from the npm registry into the cache (it runs on `ensure_node`'s Node).
    pub async fn ensure_npm(&self, say: &(dyn Fn(&str) + Sync)) -> miette::Result<()> {
        crate::npm::ensure_package("npm", &self.npm, &self.npm_dir, say).await
    }

    /// The cached npm on the cached Node, ready for arguments.
    pub fn npm_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.node_bin());
        cmd.arg(self.npm_dir.join("bin/npm-cli.js"))
            .env("PATH", self.path_env())
            .env("npm_config_update_notifier", "false");
        // Outbound HTTPS may go through an intercepting CA that only the system bundle knows.
        if Path::new("/etc/ssl/certs/ca-certificates.crt").is_file()
            && std::env::var_os("NODE_EXTRA_CA_CERTS").is_none()
        {
            cmd.env("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt");
        }
        cmd
    }

    pub async fn ensure(&self, ctx: &StepCtx) -> miette::Result<()> {
        let _lock = FileLock::take(&self.openclaw_dir.with_extension("lock")).await?;
        let say = |m: &str| ctx.progress(m);
        self.ensure_node(&say).await?;
        if self.openclaw_installed() {
            return Ok(());
        }
        self.ensure_npm(&say).await?;
        std::fs::create_dir_all(&self.openclaw_dir).into_diagnostic()?;
        let allow: serde_json::Map<String, Value> =
            ALLOW_SCRIPTS.iter().map(|p| (p.to_string(), json!(true))).collect();
        let manifest = json!({"name": "fleet-openclaw-runtime", "private": true, "allowScripts": allow});
        std::fs::write(self.openclaw_dir.join("package.json"), serde_json::to_vec_pretty(&manifest).into_diagnostic()?)
            .into_diagnostic()?;
        ctx.progress(&format!("npm install openclaw@{} (about half a minute)", self.openclaw));
        let mut cmd = self.npm_command();
        cmd.args(["install", "--prefix"]).arg(&self.openclaw_dir).args([
            "--save-exact",
            "--no-audit",
            "--no-fund",
            "--loglevel=warn",
            &format!("openclaw@{}", self.openclaw),
        ]);
        let cmd = tokio::process::Command::from(cmd);
        run_logged(&say, cmd, &self.openclaw_dir.join("install.log")).await?;
        if !self.openclaw_installed() {
            return Err(miette!(
                "npm finished but openclaw@{} is not in {}",
                self.openclaw,
                self.openclaw_dir.display()
            ));
        }
        Ok(())
    }
}

pub struct ToolchainDriver;

#[async_trait::async_trait]
impl CacheInstall for ToolchainDriver {
    fn observe_cached(&self, prior: &Record) -> Drift {
        match serde_json::from_value::<Toolchain>(prior.inputs.clone()) {
            Ok(t) if t.ready() => Drift::InSync,
            Ok(t) => Drift::Replace(format!("Node {} or openclaw {} is missing from the cache", t.node, t.openclaw)),
            Err(_) => Drift::Replace("unreadable record".into()),
        }
    }
    async fn ensure(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let t: Toolchain = r.inputs_as()?;
        t.ensure(ctx).await?;
        Ok(json!({"node": t.node_bin(), "entry": t.entry()}))
    }
}
