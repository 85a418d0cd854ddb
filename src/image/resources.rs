//! `image.<name>[<arch>]` (fetched by URL and verified, or built from a recipe) and
//! `import.<name>@<host>` (imported into the host's Incus once, under an alias; on a
//! process host unpacked into its image store, `store.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::exec::driver::{Drift, Driver, Outputs, StepCtx};
use crate::fsutil::sha256_file;
use crate::resource::Resource;
use crate::runtime::incus::{incus, query, target};
use crate::state::Record;

fn field<'a>(v: &'a Value, k: &str) -> miette::Result<&'a str> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| miette!("image input `{k}` missing"))
}

/// Streams `url` to a temp file beside `dest`, checks its sha256, renames it into place.
/// A mismatch or an interrupted download leaves nothing behind.
pub async fn fetch(url: &str, sha256: &str, dest: &Path, ctx: &StepCtx) -> miette::Result<()> {
    let dir = dest.parent().ok_or_else(|| miette!("no parent"))?;
    std::fs::create_dir_all(dir).into_diagnostic()?;
    let mut tmp = tempfile::Builder::new().prefix(".fetch-").tempfile_in(dir).into_diagnostic()?;
    let resp = reqwest::Client::new().get(url).send().await.map_err(|e| miette!("download {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(miette!("download {url}: {}", resp.status()));
    }
    let total = resp.content_length();
    let mut h = Sha256::new();
    let (mut got, mut said) = (0u64, 0u64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| miette!("download {url} interrupted: {e}"))?;
        h.update(&chunk);
        tmp.write_all(&chunk).into_diagnostic()?;
        got += chunk.len() as u64;
        if got >= said + 32 * 1024 * 1024 {
            said = got;
            ctx.progress(&match total {
                Some(t) => format!("{:.0}/{:.0} MB", got as f64 / 1e6, t as f64 / 1e6),
                None => format!("{:.0} MB", got as f64 / 1e6),
            });
        }
    }
    let have = hex::encode(h.finalize());
    if have != sha256 {
        // The temp file is removed when `tmp` drops.
        return Err(miette!("{url}: sha256 mismatch: expected {sha256}, got {have}; the file was discarded"));
    }
    tmp.as_file().sync_all().into_diagnostic()?;
    tmp.persist(dest).map_err(|e| miette!("{e}"))?;
    Ok(())
}

pub struct ImageDriver {
    pub cache: PathBuf,
}

impl ImageDriver {
    async fn ensure(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let file = PathBuf::from(field(&r.inputs, "file")?);
        if let Some(url) = r.inputs.get("url").and_then(Value::as_str) {
            let sha = field(&r.inputs, "sha256")?;
            if !(file.is_file() && sha256_file(&file)? == sha) {
                fetch(url, sha, &file, ctx).await?;
            }
            return Ok(json!({"file": file, "sha256": sha}));
        }
        let recipe = crate::image::recipe::load(Path::new(field(&r.inputs, "recipe")?)).map_err(miette::Report::new)?;
        let arch = crate::spec::Arch::parse(field(&r.inputs, "arch")?).ok_or_else(|| miette!("bad arch"))?;
        let out = file.parent().ok_or_else(|| miette!("no parent"))?.to_path_buf();
        let o = crate::image::build::Options { arch, out, no_cache: false, cache: self.cache.clone() };
        let built = crate::image::build::build(&recipe, &o, &|m: &str| ctx.progress(m)).await?;
        Ok(json!({"file": built.tarball, "sha256": built.sha256}))
    }
}

#[async_trait::async_trait]
impl Driver for ImageDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        match prior.outputs.get("file").and_then(Value::as_str) {
            Some(f) if Path::new(f).is_file() => Drift::InSync,
            _ => Drift::Update("the image file is gone from the cache".into()),
        }
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.ensure(r, ctx).await
    }
    async fn update(&self, r: &Resource, _prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.ensure(r, ctx).await
    }
    /// Image files are cache content shared by fleets: kept.
    async fn delete(&self, _prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}

/// The fingerprint an alias points at.
pub fn alias_target(remote: &Option<String>, alias: &str) -> Option<String> {
    query(remote, &format!("/1.0/images/aliases/{alias}"))?["target"].as_str().map(str::to_string)
}

pub struct ImportDriver;

/// A process host's image store (`store.rs`), when the import is for one.
fn store_of(inputs: &Value) -> Option<&Path> {
    inputs.get("store").and_then(Value::as_str).map(Path::new)
}

impl ImportDriver {
    async fn ensure(r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        if let Some(store) = store_of(&r.inputs) {
            let file = Path::new(field(&r.inputs, "file")?);
            let fp = sha256_file(file)?;
            if super::store::held(store).as_deref() != Some(fp.as_str()) {
                ctx.progress(&format!("unpacking {fp:.12} into {}", store.display()));
                let (file, store2, fp2) = (file.to_path_buf(), store.to_path_buf(), fp.clone());
                tokio::task::spawn_blocking(move || super::store::unpack(&file, &fp2, &store2))
                    .await
                    .into_diagnostic()??;
            }
            return Ok(json!({"fingerprint": fp}));
        }
        let file = field(&r.inputs, "file")?;
        let alias = field(&r.inputs, "alias")?;
        let remote = r.inputs.get("remote").and_then(Value::as_str).map(str::to_string);
        // Incus names an image by its tarball's sha256.
        let fp = sha256_file(Path::new(file))?;
        if alias_target(&remote, alias).as_deref() == Some(fp.as_str()) {
            return Ok(json!({"fingerprint": fp}));
        }
        if query(&remote, &format!("/1.0/images/{fp}")).is_none() {
            ctx.progress(&format!("incus image import ({fp:.12})"));
            let dest = match &remote {
                Some(r) => format!("{r}:"),
                None => "local:".to_string(),
            };
            incus(&["image", "import", file, &dest])?;
        }
        let _ = incus(&["image", "alias", "delete", &target(&remote, alias)]);
        incus(&["image", "alias", "create", &target(&remote, alias), &fp])?;
        Ok(json!({"fingerprint": fp}))
    }
}

#[async_trait::async_trait]
impl Driver for ImportDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let want = prior.outputs.get("fingerprint").and_then(Value::as_str);
        if let Some(store) = store_of(&prior.inputs) {
            return if super::store::held(store).as_deref() == want {
                Drift::InSync
            } else {
                Drift::Update(format!("the image store {} is missing or holds another image", store.display()))
            };
        }
        let remote = prior.inputs.get("remote").and_then(Value::as_str).map(str::to_string);
        let alias = prior.inputs.get("alias").and_then(Value::as_str).unwrap_or_default();
        if alias_target(&remote, alias).as_deref() == want {
            Drift::InSync
        } else {
            Drift::Update(format!("image alias {alias} is missing or points elsewhere"))
        }
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    async fn update(&self, r: &Resource, _prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        if let Some(store) = store_of(&prior.inputs) {
            return match std::fs::remove_dir_all(store) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", store.display()))
                }
                _ => Ok(()),
            };
        }
        let remote = prior.inputs.get("remote").and_then(Value::as_str).map(str::to_string);
        if let Some(alias) = prior.inputs.get("alias").and_then(Value::as_str) {
            let _ = incus(&["image", "alias", "delete", &target(&remote, alias)]);
        }
        if let Some(fp) = prior.outputs.get("fingerprint").and_then(Value::as_str) {
            let _ = incus(&["image", "delete", &target(&remote, fp)]);
        }
        Ok(())
    }
}
