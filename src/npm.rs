//! Packages straight from the npm registry, without npm: metadata, a streamed
//! download verified against the registry's `dist.integrity` (sha512), and
//! unpacking (dropping the tarball's leading `package/`). Used for Node itself
//! (`node-linux-<arch>`) and for npm, which then installs openclaw.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use futures_util::StreamExt;
use miette::{miette, IntoDiagnostic, WrapErr};
use sha2::{Digest, Sha512};

pub fn registry() -> String {
    for var in ["npm_config_registry", "NPM_CONFIG_REGISTRY"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v.trim_end_matches('/').to_string();
            }
        }
    }
    "https://registry.npmjs.org".to_string()
}

#[derive(Debug, Clone)]
pub struct Dist {
    pub tarball: String,
    /// `sha512-<base64>`
    pub integrity: String,
}

fn client() -> miette::Result<reqwest::Client> {
    reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(20)).build().into_diagnostic()
}

pub async fn dist(name: &str, version: &str) -> miette::Result<Dist> {
    let url = format!("{}/{name}/{version}", registry());
    let resp = client()?.get(&url).send().await.map_err(|e| miette!("npm registry {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(miette!("npm registry: {name}@{version} not found ({})", resp.status()));
    }
    let v: serde_json::Value = resp.json().await.into_diagnostic()?;
    let tarball =
        v.pointer("/dist/tarball").and_then(|t| t.as_str()).ok_or_else(|| miette!("{name}@{version}: no tarball"))?;
    let integrity = v
        .pointer("/dist/integrity")
        .and_then(|t| t.as_str())
        .ok_or_else(|| miette!("{name}@{version}: no integrity"))?;
    Ok(Dist { tarball: tarball.to_string(), integrity: integrity.to_string() })
}

/// Downloads to `dest` (a temp file is renamed into place only when the sha512 matches).
pub async fn download_verified(
    d: &Dist,
    dest: &Path,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
) -> miette::Result<()> {
    let want = d
        .integrity
        .strip_prefix("sha512-")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| miette!("unsupported integrity {}", d.integrity))?;
    let dir = dest.parent().ok_or_else(|| miette!("no parent"))?;
    std::fs::create_dir_all(dir).into_diagnostic()?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).into_diagnostic()?;
    let resp = client()?.get(&d.tarball).send().await.map_err(|e| miette!("download {}: {e}", d.tarball))?;
    if !resp.status().is_success() {
        return Err(miette!("download {}: {}", d.tarball, resp.status()));
    }
    let total = resp.content_length();
    let mut hasher = Sha512::new();
    let mut got = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| miette!("download {}: {e}", d.tarball))?;
        hasher.update(&chunk);
        tmp.write_all(&chunk).into_diagnostic()?;
        got += chunk.len() as u64;
        progress(got, total);
    }
    let have = hasher.finalize();
    if have.as_slice() != want.as_slice() {
        return Err(miette!(
            "integrity mismatch for {}: expected {}, got sha512-{}",
            d.tarball,
            d.integrity,
            base64::engine::general_purpose::STANDARD.encode(have)
        ));
    }
    tmp.as_file().sync_all().into_diagnostic()?;
    tmp.persist(dest).map_err(|e| miette!("{e}"))?;
    Ok(())
}

/// Unpacks an npm tarball into `dest` (created fresh), dropping the leading `package/`.
pub fn unpack(tgz: &Path, dest: &Path) -> miette::Result<()> {
    let f = std::fs::File::open(tgz).into_diagnostic()?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.set_preserve_permissions(true);
    std::fs::create_dir_all(dest).into_diagnostic()?;
    for entry in ar.entries().into_diagnostic()? {
        let mut e = entry.into_diagnostic()?;
        let path = e.path().into_diagnostic()?.into_owned();
        let rel: PathBuf = path.components().skip(1).collect();
        if rel.as_os_str().is_empty() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            continue;
        }
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).into_diagnostic()?;
        }
        e.unpack(&out).into_diagnostic().wrap_err_with(|| format!("unpack {}", rel.display()))?;
    }
    Ok(())
}

/// Fetches `name@version` into `dest` unless it is already there (atomic: unpack beside, then rename).
pub async fn ensure_package(
    name: &str,
    version: &str,
    dest: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> miette::Result<()> {
    if dest.join("package.json").is_file() {
        return Ok(());
    }
    let d = dist(name, version).await?;
    let parent = dest.parent().ok_or_else(|| miette!("no parent"))?;
    std::fs::create_dir_all(parent).into_diagnostic()?;
    let tgz = parent.join(format!(".{name}-{version}.tgz"));
    let last = std::sync::Mutex::new(0u64);
    download_verified(&d, &tgz, &|got, total| {
        let mut l = last.lock().expect("progress lock");
        if got >= *l + 8 * 1024 * 1024 || Some(got) == total {
            *l = got;
            let mb = |b: u64| b as f64 / 1e6;
            match total {
                Some(t) => progress(&format!("{name}@{version}: {:.0}/{:.0} MB", mb(got), mb(t))),
                None => progress(&format!("{name}@{version}: {:.0} MB", mb(got))),
            }
        }
    })
    .await?;
    let staging = parent.join(format!(".{}.staging", dest.file_name().and_then(|n| n.to_str()).unwrap_or("pkg")));
    let _ = std::fs::remove_dir_all(&staging);
    unpack(&tgz, &staging)?;
    let _ = std::fs::remove_file(&tgz);
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&staging, dest).into_diagnostic()?;
    Ok(())
}
