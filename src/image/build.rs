//! `fleet image build`: base (mmdebstrap, cached by its inputs) → Node → openclaw →
//! files → run steps → reproducible pack, with a `.sha256` and a JSON manifest;
//! a build whose inputs are all unchanged returns the cached artifact.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::json;

use super::pack::pack;
use super::recipe::Recipe;
use crate::fleetfile::Arch;
use crate::fsutil::{sha256_file, sha256_hex};

/// Bumped whenever the builder's output for the same inputs would change.
pub const BUILDER_VERSION: u32 = 1;

pub struct Options {
    pub arch: Arch,
    pub out: PathBuf,
    pub no_cache: bool,
    pub cache: PathBuf,
}

#[derive(Debug)]
pub struct Built {
    pub tarball: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub cached: bool,
    pub phases: Vec<(String, Duration)>,
}

fn incus_arch(a: Arch) -> &'static str {
    match a {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "aarch64",
    }
}

/// The recipe's fingerprint: everything that goes into the image.
pub fn fingerprint(r: &Recipe, arch: Arch) -> miette::Result<String> {
    let mut files = Vec::new();
    for f in &r.files {
        let bytes =
            std::fs::read(&f.from).into_diagnostic().wrap_err_with(|| format!("cannot read {}", f.from.display()))?;
        files.push(json!({"to": f.to, "mode": f.mode, "sha256": sha256_hex(&bytes)}));
    }
    let lock = match &r.lock {
        Some(p) => Some(sha256_hex(&std::fs::read(p).into_diagnostic()?)),
        None => None,
    };
    let v = json!({"builder": BUILDER_VERSION, "recipe": r, "files": files, "arch": arch.as_str(), "lock": lock});
    Ok(sha256_hex(v.to_string().as_bytes()))
}

fn base_key(r: &Recipe, arch: Arch) -> String {
    let mut pk = r.packages.clone();
    pk.sort();
    let v = json!({"builder": BUILDER_VERSION, "d": r.distribution, "s": r.suite, "v": r.variant, "m": r.mirror, "p": pk, "a": arch.as_str(), "e": r.source_date_epoch});
    sha256_hex(v.to_string().as_bytes())
}

fn run(cmd: &mut std::process::Command, what: &str) -> miette::Result<()> {
    let out = cmd.output().into_diagnostic().wrap_err_with(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(miette!("{what} failed ({}):\n{}", out.status, tail.join("\n")));
    }
    Ok(())
}

/// The base root filesystem as a tarball, from the cache or made now.
fn base(r: &Recipe, arch: Arch, cache: &Path, no_cache: bool, say: &dyn Fn(&str)) -> miette::Result<PathBuf> {
    let tar = cache.join("images/bases").join(format!("{}.tar", base_key(r, arch)));
    if tar.is_file() && !no_cache {
        return Ok(tar);
    }
    std::fs::create_dir_all(tar.parent().expect("parent")).into_diagnostic()?;
    let tmp = tar.with_extension("tmp.tar");
    let include = r.packages.join(",");
    if crate::fsutil::which("mmdebstrap").is_some() {
        say(&format!("mmdebstrap {} {} ({})", r.suite, r.variant, arch.as_str()));
        let mut cmd = std::process::Command::new("mmdebstrap");
        cmd.args(["--mode=root", &format!("--variant={}", r.variant), &format!("--architectures={}", arch.as_str())]);
        if !include.is_empty() {
            cmd.arg(format!("--include={include}"));
        }
        cmd.arg(&r.suite).arg(&tmp).arg(&r.mirror).env("SOURCE_DATE_EPOCH", r.source_date_epoch.to_string());
        run(&mut cmd, "mmdebstrap")?;
    } else if crate::fsutil::which("debootstrap").is_some() {
        say(&format!("debootstrap {} {} ({}); mmdebstrap is faster", r.suite, r.variant, arch.as_str()));
        let dir = tempfile::tempdir_in(tar.parent().expect("parent")).into_diagnostic()?;
        let mut cmd = std::process::Command::new("debootstrap");
        cmd.args([
            &format!("--variant={}", if r.variant == "apt" { "minbase" } else { &r.variant }),
            &format!("--arch={}", arch.as_str()),
        ]);
        if !include.is_empty() {
            cmd.arg(format!("--include={include}"));
        }
        cmd.arg(&r.suite).arg(dir.path()).arg(&r.mirror).env("SOURCE_DATE_EPOCH", r.source_date_epoch.to_string());
        run(&mut cmd, "debootstrap")?;
        let mut t = std::process::Command::new("tar");
        t.arg("-C").arg(dir.path()).args(["--numeric-owner", "-cf"]).arg(&tmp).arg(".");
        run(&mut t, "tar")?;
    } else {
        return Err(miette!("neither mmdebstrap nor debootstrap is installed; `apt-get install mmdebstrap`"));
    }
    std::fs::rename(&tmp, &tar).into_diagnostic()?;
    Ok(tar)
}

/// Unpacks the base (device nodes left out: the runtime provides /dev).
fn unpack_base(tar: &Path, root: &Path) -> miette::Result<()> {
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-C").arg(root).args(["--numeric-owner", "-xpf"]).arg(tar).args(["--exclude=./dev/*"]);
    run(&mut cmd, "tar -x (base)")
}

fn copy_tree(from: &Path, to: &Path) -> miette::Result<()> {
    let mut cmd = std::process::Command::new("cp");
    cmd.arg("-a").arg(format!("{}/.", from.display())).arg(to);
    run(&mut cmd, "cp -a")
}

/// The cached npm, with a download cache of its own for image builds.
fn npm(host: &crate::openclaw::toolchain::Toolchain, cache: &Path) -> std::process::Command {
    let mut cmd = host.npm_command();
    cmd.env("npm_config_cache", cache.join("npm-cache"));
    cmd
}

fn lock_manifest(openclaw: &str) -> String {
    let v = json!({"name": "fleet-image-openclaw", "private": true, "dependencies": {"openclaw": openclaw}});
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

/// `fleet image lock`: resolves the recipe's npm tree (versions + integrity) into `<recipe>.lock.json`.
pub async fn lock(
    recipe_path: &Path,
    r: &Recipe,
    cache: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> miette::Result<PathBuf> {
    let (Some(openclaw), Some(node)) = (&r.openclaw, &r.node) else {
        return Err(miette!("recipe {} installs nothing from npm: there is nothing to lock", r.name));
    };
    let host = crate::openclaw::toolchain::Toolchain::new(cache, node, openclaw);
    host.ensure_node(say).await?;
    host.ensure_npm(say).await?;
    let work = tempfile::tempdir().into_diagnostic()?;
    std::fs::write(work.path().join("package.json"), lock_manifest(openclaw)).into_diagnostic()?;
    say(&format!("resolving openclaw@{openclaw}"));
    let mut cmd = npm(&host, cache);
    cmd.args([
        "install",
        "--package-lock-only",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--prefix",
    ])
    .arg(work.path());
    run(&mut cmd, "npm install --package-lock-only")?;
    let out = super::recipe::lock_path(recipe_path);
    std::fs::copy(work.path().join("package-lock.json"), &out).into_diagnostic()?;
    Ok(out)
}

pub async fn build(r: &Recipe, o: &Options, say: &(dyn Fn(&str) + Sync)) -> miette::Result<Built> {
    let t_all = Instant::now();
    let mut phases = Vec::new();
    let key = fingerprint(r, o.arch)?;
    let file_name = format!("{}-{}.tar.gz", r.name, o.arch.as_str());
    let cached_dir = o.cache.join("images/artifacts").join(&key);
    let cached = cached_dir.join(&file_name);
    std::fs::create_dir_all(&o.out).into_diagnostic()?;
    let out = o.out.join(&file_name);
    if cached.is_file() && !o.no_cache {
        for ext in ["", ".sha256", ".json"] {
            let name = format!("{file_name}{ext}");
            let name = if ext == ".json" { format!("{}-{}.json", r.name, o.arch.as_str()) } else { name };
            std::fs::copy(cached_dir.join(&name), o.out.join(&name)).into_diagnostic()?;
        }
        let sha = std::fs::read_to_string(cached_dir.join(format!("{file_name}.sha256"))).into_diagnostic()?;
        phases.push(("cache hit".to_string(), t_all.elapsed()));
        let size = std::fs::metadata(&out).into_diagnostic()?.len();
        return Ok(Built {
            tarball: out,
            sha256: sha.split_whitespace().next().unwrap_or_default().to_string(),
            size,
            cached: true,
            phases,
        });
    }
    if r.openclaw.is_some() && o.arch != Arch::native() {
        return Err(miette!(
            "building an openclaw image for {} on a {} machine needs that architecture's npm packages: build it on a native {} runner (see docs/images.md)",
            o.arch.as_str(),
            Arch::native().as_str(),
            o.arch.as_str()
        ));
    }

    let t = Instant::now();
    let base_tar = base(r, o.arch, &o.cache, o.no_cache, say)?;
    phases.push(("base".to_string(), t.elapsed()));

    let work = tempfile::tempdir_in(o.cache.join("images")).into_diagnostic()?;
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(&root).into_diagnostic()?;
    let t = Instant::now();
    unpack_base(&base_tar, &root)?;
    phases.push(("unpack base".to_string(), t.elapsed()));

    if let Some(node) = &r.node {
        let t = Instant::now();
        let package = o.arch.node_package();
        let node_dir = o.cache.join("node").join(if o.arch == Arch::native() {
            node.clone()
        } else {
            format!("{node}-{}", o.arch.as_str())
        });
        say(&format!("{package}@{node}"));
        crate::npm::ensure_package(package, node, &node_dir, say).await?;
        let usr_local = root.join("usr/local");
        std::fs::create_dir_all(&usr_local).into_diagnostic()?;
        for part in ["bin", "include", "share"] {
            if node_dir.join(part).is_dir() {
                std::fs::create_dir_all(usr_local.join(part)).into_diagnostic()?;
                copy_tree(&node_dir.join(part), &usr_local.join(part))?;
            }
        }
        phases.push(("node".to_string(), t.elapsed()));
    }
    if let Some(openclaw) = &r.openclaw {
        let t = Instant::now();
        let node = r.node.clone().unwrap_or_default();
        // npm runs on the build machine with the same Node, installing straight into the image's
        // /usr/local: no chroot, so no resolv.conf or CA bundle ever enters the image.
        let host = crate::openclaw::toolchain::Toolchain::new(&o.cache, &node, openclaw);
        host.ensure_npm(say).await?;
        let mut cmd = npm(&host, &o.cache);
        match &r.lock {
            // With a lock: exactly the recorded tree (versions + integrity), as a project in
            // /usr/local/lib/openclaw, and `openclaw` linked onto PATH.
            Some(lock) => {
                say(&format!("npm ci openclaw@{openclaw} (locked)"));
                let app = root.join("usr/local/lib/openclaw");
                std::fs::create_dir_all(&app).into_diagnostic()?;
                std::fs::write(app.join("package.json"), lock_manifest(openclaw)).into_diagnostic()?;
                std::fs::copy(lock, app.join("package-lock.json")).into_diagnostic()?;
                cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"]).arg(&app);
                run(&mut cmd, "npm ci")?;
                let bin = root.join("usr/local/bin");
                std::fs::create_dir_all(&bin).into_diagnostic()?;
                let _ = std::fs::remove_file(bin.join("openclaw"));
                std::os::unix::fs::symlink("../lib/openclaw/node_modules/openclaw/openclaw.mjs", bin.join("openclaw"))
                    .into_diagnostic()?;
            }
            None => {
                say(&format!("npm install -g openclaw@{openclaw} (no lock: `fleet image lock` pins the tree)"));
                cmd.args(["install", "-g", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                    .arg(root.join("usr/local"))
                    .arg(format!("openclaw@{openclaw}"));
                run(&mut cmd, "npm install -g openclaw")?;
            }
        }
        phases.push(("openclaw".to_string(), t.elapsed()));
    }

    let t = Instant::now();
    for f in &r.files {
        let dest = root.join(f.to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).into_diagnostic()?;
        std::fs::copy(&f.from, &dest).into_diagnostic().wrap_err_with(|| format!("copy {}", f.from.display()))?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(f.mode)).into_diagnostic()?;
    }
    for step in &r.run {
        say(&format!("run: {step}"));
        let mut cmd = std::process::Command::new("chroot");
        cmd.arg(&root)
            .args(["/bin/sh", "-ec", step])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("SOURCE_DATE_EPOCH", r.source_date_epoch.to_string());
        run(&mut cmd, &format!("run step `{step}`"))?;
    }
    // Leave nothing from the build machine behind.
    for transient in ["etc/resolv.conf", "etc/hostname"] {
        let _ = std::fs::remove_file(root.join(transient));
    }
    phases.push(("files and steps".to_string(), t.elapsed()));

    let t = Instant::now();
    let mut props = vec![
        ("description".to_string(), if r.description.is_empty() { r.name.clone() } else { r.description.clone() }),
        ("architecture".to_string(), incus_arch(o.arch).to_string()),
    ];
    props.extend(r.properties.iter().cloned());
    let mut yaml =
        format!("architecture: {}\ncreation_date: {}\nproperties:\n", incus_arch(o.arch), r.source_date_epoch);
    for (k, v) in &props {
        yaml.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).expect("string")));
    }
    let tmp_out = work.path().join(&file_name);
    say("packing");
    pack(&root, &yaml, r.source_date_epoch, &tmp_out)?;
    phases.push(("pack".to_string(), t.elapsed()));

    let sha = sha256_file(&tmp_out)?;
    let size = std::fs::metadata(&tmp_out).into_diagnostic()?.len();
    let manifest = json!({
        "name": r.name,
        "arch": o.arch.as_str(),
        "recipe_fingerprint": key,
        "sha256": sha,
        "size": size,
        "versions": {"suite": r.suite, "variant": r.variant, "node": r.node, "openclaw": r.openclaw},
        "source_date_epoch": r.source_date_epoch,
        "builder": BUILDER_VERSION,
    });
    std::fs::create_dir_all(&cached_dir).into_diagnostic()?;
    std::fs::rename(&tmp_out, cached_dir.join(&file_name)).into_diagnostic()?;
    std::fs::write(cached_dir.join(format!("{file_name}.sha256")), format!("{sha}  {file_name}\n"))
        .into_diagnostic()?;
    let manifest_name = format!("{}-{}.json", r.name, o.arch.as_str());
    std::fs::write(cached_dir.join(&manifest_name), serde_json::to_vec_pretty(&manifest).into_diagnostic()?)
        .into_diagnostic()?;
    for name in [file_name.clone(), format!("{file_name}.sha256"), manifest_name] {
        std::fs::copy(cached_dir.join(&name), o.out.join(&name)).into_diagnostic()?;
    }
    Ok(Built { tarball: out, sha256: sha, size, cached: false, phases })
}
