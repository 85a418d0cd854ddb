//! `image.<name>[<arch>]` (fetched by URL and verified, or built from a recipe) and
//! `import.<name>@<host>` (imported into the host's Incus once, under an alias; on a
//! process host unpacked into its image store, `store.rs`).
//!
//! An Incus image and its alias are shared by every fleet on that Incus: each fleet marks
//! the image with a `user.fleet.<fleet>` property while it uses it, and `destroy` removes
//! the image only when no other fleet's mark is left.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::driver::{CacheInstall, Drift, Driver, Outputs, StepCtx};
use crate::fsutil::sha256_file;
use crate::resource::Resource;
use crate::runtime::incus_cli::{incus_in, query_in, target};
use crate::state::Record;

/// `image.<name>[<arch>]`: fetched from a URL and checked against its sha256, or built from a recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageInputs {
    Url { name: String, arch: String, url: String, sha256: String, file: PathBuf },
    Recipe { name: String, arch: String, recipe: PathBuf, recipe_fingerprint: Option<String>, file: PathBuf },
}

/// `import.<name>@<host>`: the image file into the host's Incus under `alias`, or unpacked into a
/// process host's `store`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportInputs {
    /// The `image.<name>[<arch>]` address it imports.
    pub image: String,
    pub file: PathBuf,
    pub alias: String,
    /// The Incus remote (the local daemon when absent).
    pub remote: Option<String>,
    /// The Incus client config that knows `remote` (the caller's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incus_config: Option<PathBuf>,
    /// What the image is (its sha256, or its recipe's fingerprint).
    pub source: Option<String>,
    /// A process host's image store, when the import is for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// The fleet importing it (its mark on a shared Incus image).
    #[serde(default)]
    pub fleet: String,
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

#[async_trait::async_trait]
impl CacheInstall for ImageDriver {
    async fn ensure(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let (recipe, arch, file) = match r.inputs_as::<ImageInputs>()? {
            ImageInputs::Url { url, sha256, file, .. } => {
                if !(file.is_file() && sha256_file(&file)? == sha256) {
                    fetch(&url, &sha256, &file, ctx).await?;
                }
                return Ok(json!({"file": file, "sha256": sha256}));
            }
            ImageInputs::Recipe { recipe, arch, file, .. } => (recipe, arch, file),
        };
        let recipe = crate::image::recipe::load(&recipe).map_err(miette::Report::new)?;
        let arch = crate::fleetfile::Arch::parse(&arch).ok_or_else(|| miette!("bad arch {arch}"))?;
        let out = file.parent().ok_or_else(|| miette!("no parent"))?.to_path_buf();
        let o = crate::image::build::Options { arch, out, no_cache: false, cache: self.cache.clone() };
        let built = crate::image::build::build(&recipe, &o, &|m: &str| ctx.progress(m)).await?;
        Ok(json!({"file": built.tarball, "sha256": built.sha256}))
    }

    fn observe_cached(&self, prior: &Record) -> Drift {
        match prior.outputs.get("file").and_then(Value::as_str) {
            Some(f) if Path::new(f).is_file() => Drift::InSync,
            _ => Drift::Update("the image file is gone from the cache".into()),
        }
    }
}

/// The fingerprint an alias points at.
pub async fn alias_target(conf: Option<&Path>, remote: &Option<String>, alias: &str) -> Option<String> {
    query_in(conf, remote, &format!("/1.0/images/aliases/{alias}")).await?["target"].as_str().map(str::to_string)
}

pub struct ImportDriver;

/// The image property that says `fleet` uses the image.
fn mark(fleet: &str) -> String {
    format!("user.fleet.{fleet}")
}

/// The fleets whose mark an Incus image carries.
async fn users(conf: Option<&Path>, remote: &Option<String>, fp: &str) -> Vec<String> {
    let props =
        query_in(conf, remote, &format!("/1.0/images/{fp}")).await.map(|v| v["properties"].clone()).unwrap_or_default();
    props
        .as_object()
        .map(|o| o.keys().filter_map(|k| k.strip_prefix("user.fleet.")).map(str::to_string).collect())
        .unwrap_or_default()
}

impl ImportDriver {
    async fn ensure(r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        let i: ImportInputs = r.inputs_as()?;
        if let Some(store) = &i.store {
            let fp = sha256_file(&i.file)?;
            if super::store::held(store).as_deref() != Some(fp.as_str()) {
                ctx.progress(&format!("unpacking {fp:.12} into {}", store.display()));
                let (file, store2, fp2) = (i.file.clone(), store.clone(), fp.clone());
                tokio::task::spawn_blocking(move || super::store::unpack(&file, &fp2, &store2))
                    .await
                    .into_diagnostic()??;
            }
            return Ok(json!({"fingerprint": fp}));
        }
        let file = i.file.display().to_string();
        let (remote, alias, conf) = (&i.remote, i.alias.as_str(), i.incus_config.as_deref());
        // Incus names an image by its tarball's sha256.
        let fp = sha256_file(&i.file)?;
        let current = alias_target(conf, remote, alias).await;
        if let Some(other) = current.as_deref().filter(|t| *t != fp) {
            let others: Vec<String> = users(conf, remote, other).await.into_iter().filter(|f| *f != i.fleet).collect();
            if !others.is_empty() {
                return Err(miette!(
                    help = "give the image another name in one of the fleet files, or update both to the same image",
                    "image alias {alias} on this Incus points at another image ({other:.12}) that fleet {} uses",
                    others.join(", ")
                ));
            }
        }
        if query_in(conf, remote, &format!("/1.0/images/{fp}")).await.is_none() {
            ctx.progress(&format!("incus image import ({fp:.12})"));
            let dest = match remote {
                Some(r) => format!("{r}:"),
                None => "local:".to_string(),
            };
            incus_in(conf, &["image", "import", &file, &dest]).await?;
        }
        if current.as_deref() != Some(fp.as_str()) {
            let _ = incus_in(conf, &["image", "alias", "delete", &target(remote, alias)]).await;
            if let Err(e) = incus_in(conf, &["image", "alias", "create", &target(remote, alias), &fp]).await {
                // Another fleet created it at the same moment: fine if it points at this image.
                if alias_target(conf, remote, alias).await.as_deref() != Some(fp.as_str()) {
                    return Err(e);
                }
            }
        }
        incus_in(conf, &["image", "set-property", &target(remote, &fp), &mark(&i.fleet), "true"]).await?;
        Ok(json!({"fingerprint": fp}))
    }
}

#[async_trait::async_trait]
impl Driver for ImportDriver {
    async fn observe(&self, prior: &Record, _desired: &Resource) -> Drift {
        let want = prior.outputs.get("fingerprint").and_then(Value::as_str);
        let Ok(i) = prior.inputs_as::<ImportInputs>() else { return Drift::Update("unreadable record".into()) };
        if let Some(store) = &i.store {
            return if super::store::held(store).as_deref() == want {
                Drift::InSync
            } else {
                Drift::Update(format!("the image store {} is missing or holds another image", store.display()))
            };
        }
        if alias_target(i.incus_config.as_deref(), &i.remote, &i.alias).await.as_deref() != want {
            return Drift::Update(format!("image alias {} is missing or points elsewhere", i.alias));
        }
        let marked = match want {
            Some(fp) => users(i.incus_config.as_deref(), &i.remote, fp).await.contains(&i.fleet),
            None => false,
        };
        if !marked {
            return Drift::Update(format!("image {} does not carry this fleet's mark", i.alias));
        }
        Drift::InSync
    }
    async fn create(&self, r: &Resource, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    async fn update(&self, r: &Resource, _prior: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        Self::ensure(r, ctx).await
    }
    /// A process host's store goes; an Incus image loses this fleet's mark, and goes (alias and
    /// all) only when no other fleet's mark is left on it.
    async fn delete(&self, prior: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        let i: ImportInputs = prior.inputs_as()?;
        if let Some(store) = &i.store {
            return match std::fs::remove_dir_all(store) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).into_diagnostic().wrap_err_with(|| format!("cannot remove {}", store.display()))
                }
                _ => Ok(()),
            };
        }
        let Some(fp) = prior.outputs.get("fingerprint").and_then(Value::as_str) else { return Ok(()) };
        let (remote, conf) = (&i.remote, i.incus_config.as_deref());
        if query_in(conf, remote, &format!("/1.0/images/{fp}")).await.is_none() {
            return Ok(());
        }
        let _ = incus_in(conf, &["image", "unset-property", &target(remote, fp), &mark(&i.fleet)]).await;
        if !users(conf, remote, fp).await.iter().all(|f| *f == i.fleet) {
            return Ok(()); // another fleet still uses it
        }
        if alias_target(conf, remote, &i.alias).await.as_deref() == Some(fp) {
            let _ = incus_in(conf, &["image", "alias", "delete", &target(remote, &i.alias)]).await;
        }
        let _ = incus_in(conf, &["image", "delete", &target(remote, fp)]).await;
        Ok(())
    }
}
