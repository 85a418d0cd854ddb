//! The Incus runtime: one container per gateway from the imported image alias, a proxy device
//! publishing the gateway's port and others bringing the LiteLLM proxy (and the daemon) onto the
//! container's loopback.
//!
//! On this machine's incusd the gateway home is a directory here mounted at /root (`shift=true`)
//! and the container is disposable: stopping a gateway deletes it, starting creates it afresh.
//! On another host (`remote`) nothing of this machine can be mounted: the home is the container's
//! own `/root`, so the container is kept across stops and restarts (a new image carries the home
//! over), fleet's files go in and out through the Incus file API, and the port is published on
//! the host's `listen` address only.

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic};

use super::incus_cli::{incus, incus_in, instance_state, query_in, target};
use super::{Container, ContainerHandle, Handle, HomeFile, Launch, Runtime};
use crate::netaddr::join_host_port;

pub struct IncusRuntime;

fn container(l: &Launch) -> miette::Result<&Container> {
    l.container.as_ref().ok_or_else(|| miette!("gateway {} has no container settings", l.gateway))
}

#[async_trait::async_trait]
impl Runtime for IncusRuntime {
    async fn start(&self, l: &Launch) -> miette::Result<Handle> {
        let c = container(l)?;
        if c.elsewhere() {
            return remote::start(l, c).await;
        }
        let name = target(&c.remote, &c.name);
        for d in ["state", "logs", "tmp", "workspaces"] {
            std::fs::create_dir_all(l.home.join(d)).into_diagnostic()?;
        }
        if instance_state(None, &c.remote, &c.name).await.is_some() {
            let _ = incus(&["delete", "--force", &name]).await;
        }
        let (image, label) = (target(&c.remote, &c.image), label(l, c));
        let confined = confined_at_init(l);
        let mut init = vec!["init", image.as_str(), name.as_str(), "-c", label.as_str(), "-q"];
        init.extend(confined.iter().map(String::as_str));
        incus(&init).await?;
        let home = format!("source={}", l.home.display());
        incus(&["config", "device", "add", &name, "home", "disk", &home, "path=/root", "shift=true", "-q"]).await?;
        for (device, props) in devices(l, c) {
            let mut args = vec!["config", "device", "add", &name, &device, "proxy"];
            args.extend(props.iter().map(String::as_str));
            args.push("-q");
            incus(&args).await?;
        }
        incus(&["start", &name]).await?;
        Ok(Handle::Container(handle(c)))
    }

    async fn stop(&self, l: &Launch, handle: &Handle) -> miette::Result<()> {
        let c = container(l)?;
        let name = handle.container().map_or(c.name.as_str(), |h| h.container.as_str());
        let config = c.incus_config.as_deref();
        match instance_state(config, &c.remote, name).await.as_deref() {
            None => {}
            // Its home is inside: stopped, kept.
            Some("Stopped") if c.elsewhere() => {}
            Some(_) if c.elsewhere() => {
                incus_in(config, &["stop", "--force", &target(&c.remote, name)]).await?;
            }
            Some(_) => {
                incus(&["delete", "--force", &target(&c.remote, name)]).await?;
            }
        }
        Ok(())
    }

    async fn running(&self, handle: &Handle) -> bool {
        let Some(h) = handle.container() else { return false };
        instance_state(h.incus_config.as_deref(), &h.remote, &h.container).await.as_deref() == Some("Running")
    }

    async fn place(&self, l: &Launch, files: &[HomeFile]) -> miette::Result<()> {
        let c = container(l)?;
        if !c.elsewhere() {
            return super::place_in_home_here(l, files).await;
        }
        remote::place(l, c, files).await
    }

    async fn read_home(&self, l: &Launch, path: &Path) -> miette::Result<Option<Vec<u8>>> {
        match l.container.as_ref().filter(|c| c.elsewhere()) {
            Some(c) => remote::pull(c, &Path::new("/root").join(path)).await,
            None => super::read_here(&l.home.join(path)).await,
        }
    }

    async fn bring_here(&self, l: &Launch, path: &Path) -> miette::Result<()> {
        match l.container.as_ref().filter(|c| c.elsewhere()) {
            Some(c) => remote::bring_here(l, c, path).await,
            None => Ok(()),
        }
    }

    async fn send_there(&self, l: &Launch, path: &Path) -> miette::Result<()> {
        match l.container.as_ref().filter(|c| c.elsewhere()) {
            Some(c) => remote::send_there(l, c, path).await,
            None => Ok(()),
        }
    }

    async fn home_has(&self, l: &Launch, path: &Path) -> bool {
        match l.container.as_ref().filter(|c| c.elsewhere()) {
            Some(c) => remote::has(c, &Path::new("/root").join(path)).await,
            None => tokio::fs::try_exists(l.home.join(path)).await.unwrap_or(false),
        }
    }

    async fn unreachable(&self, l: &Launch, handle: &Handle) -> Option<String> {
        let c = l.container.as_ref().filter(|c| c.elsewhere())?;
        let (conf, host) = (c.incus_config.as_deref(), c.remote.as_deref().unwrap_or_default());
        if let Err(e) = incus_in(conf, &["query", &target(&c.remote, "/1.0")]).await {
            return Some(format!("unreachable: host {host} does not answer ({})", crate::driver::error_chain(&e)));
        }
        // On a cluster: the member it is on may be the one that is down (and then the cluster may
        // not say where the instance is: its last start recorded the member).
        let located = query_in(conf, &c.remote, &format!("/1.0/instances/{}", c.name))
            .await
            .and_then(|i| i["location"].as_str().map(str::to_string));
        let member = located.or_else(|| handle.container().and_then(|h| h.member.clone()));
        let member = member.filter(|m| !m.is_empty() && m != "none")?;
        let status = query_in(conf, &c.remote, &format!("/1.0/cluster/members/{member}")).await?["status"]
            .as_str()
            .map(str::to_string)?;
        (!status.eq_ignore_ascii_case("online"))
            .then(|| format!("unreachable: its member {member} of host {host} is {status}"))
    }

    /// On another host, from inside the container (the image's init writes gateway.out there).
    async fn logs(&self, l: &Launch) -> String {
        let Some(c) = l.container.as_ref().filter(|c| c.elsewhere()) else { return super::logs_here(l) };
        let mut out = String::new();
        for (file, n) in [("logs/gateway.out", 15), ("logs/openclaw.log", 10)] {
            let text = remote::pull(c, &Path::new("/root").join(file)).await.ok().flatten().unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "last lines of /root/{file} in the container:\n{}\n",
                lines[lines.len().saturating_sub(n)..].join("\n")
            );
        }
        out
    }

    async fn discard(&self, l: &Launch) -> miette::Result<()> {
        let c = container(l)?;
        if c.elsewhere() && instance_state(c.incus_config.as_deref(), &c.remote, &c.name).await.is_some() {
            incus_in(c.incus_config.as_deref(), &["delete", "--force", &target(&c.remote, &c.name)]).await?;
        }
        Ok(())
    }

    fn home_inside(&self, _l: &Launch) -> PathBuf {
        PathBuf::from("/root")
    }
}

/// The label `fleet gc` knows a container by: the container is `fleet-<fleet>-<gateway>`.
/// A gateway's container is never privileged and never nests containers (docs/security.md), and
/// takes no more than its `limits` (one not declared: its key empty, Incus's "no limit"): said at
/// its creation (only the keys with a value), and again before every start of one kept from before.
fn confined(l: &Launch) -> Vec<String> {
    let lim = &l.limits;
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    vec![
        "security.privileged=false".into(),
        "security.nesting=false".into(),
        format!("limits.memory={}", or_empty(lim.memory.map(|b| b.to_string()))),
        // Swap would let it past its memory limit.
        format!("limits.memory.swap={}", or_empty(lim.memory.map(|_| "false".to_string()))),
        // A hard cap on CPU time, as the process runtime's cgroup quota.
        format!(
            "limits.cpu.allowance={}",
            or_empty(lim.cpus.map(|c| format!("{}ms/100ms", (c * 100.0).round().max(1.0) as u64)))
        ),
        format!("limits.processes={}", or_empty(lim.processes.map(|p| p.to_string()))),
    ]
}

/// `confined(l)` as `init` options: only the keys with a value.
fn confined_at_init(l: &Launch) -> Vec<String> {
    confined(l).into_iter().filter(|kv| !kv.ends_with('=')).flat_map(|kv| ["-c".to_string(), kv]).collect()
}

fn label(l: &Launch, c: &Container) -> String {
    let fleet = c.name.strip_prefix("fleet-").and_then(|r| r.strip_suffix(&format!("-{}", l.gateway)));
    format!("user.fleet.fleet={}", fleet.unwrap_or(&c.name))
}

/// What the runtime records to find the container again.
fn handle(c: &Container) -> ContainerHandle {
    ContainerHandle {
        container: c.name.clone(),
        remote: c.remote.clone(),
        incus_config: c.incus_config.clone(),
        listen: None,
        member: None,
    }
}

/// The proxy devices (name, properties): the gateway's port published on the host (its loopback
/// here; the `listen` address on another host, never every address), and each forwarded port
/// (the LiteLLM proxy, the daemon) listening on the container's loopback and connecting to where
/// it listens, seen from the container's host.
fn devices(l: &Launch, c: &Container) -> Vec<(String, Vec<String>)> {
    let inside = format!("tcp:127.0.0.1:{}", l.port);
    let outside = match &c.listen {
        Some(ip) => format!("tcp:{}", join_host_port(ip, l.port)),
        None => inside.clone(),
    };
    let mut out = vec![("gateway".to_string(), vec![format!("listen={outside}"), format!("connect={inside}")])];
    for port in &c.forward {
        let to = c.forward_to.get(port).map(String::as_str).unwrap_or("127.0.0.1");
        out.push((
            format!("host-{port}"),
            vec![
                "bind=instance".into(),
                format!("listen=tcp:127.0.0.1:{port}"),
                format!("connect=tcp:{}", join_host_port(to, *port)),
            ],
        ));
    }
    out
}

/// A gateway on another host: its container kept, its home inside, files through the Incus API.
mod remote {
    use std::path::Path;

    use miette::{miette, IntoDiagnostic, WrapErr};

    use super::{
        devices, handle, incus_in, label, query_in, target, Container, ContainerHandle, Handle, HomeFile, Launch,
    };

    /// The container as fleet wants it before the gateway starts: there, from the image the alias
    /// names now, stopped. One from another image is replaced, its home carried across.
    async fn ensure(l: &Launch, c: &Container) -> miette::Result<()> {
        let conf = c.incus_config.as_deref();
        let name = target(&c.remote, &c.name);
        let image = query_in(conf, &c.remote, &format!("/1.0/images/aliases/{}", c.image))
            .await
            .and_then(|v| v["target"].as_str().map(str::to_string))
            .ok_or_else(|| miette!("image {} is not on host {}", c.image, c.remote.as_deref().unwrap_or("")))?;
        let now = query_in(conf, &c.remote, &format!("/1.0/instances/{}", c.name)).await;
        let mut carried = None;
        if let Some(now) = now {
            if now["status"].as_str() != Some("Stopped") {
                incus_in(conf, &["stop", "--force", &name]).await?;
            }
            if now["config"]["volatile.base_image"].as_str() == Some(image.as_str()) {
                return placed(c, now["location"].as_str().unwrap_or_default()).await;
            }
            // Another image: its home comes along (pulled here, pushed into the new container).
            let dir = tempfile::tempdir().into_diagnostic()?;
            incus_in(conf, &["file", "pull", "-r", "-q", &format!("{name}/root"), &dir.path().display().to_string()])
                .await?;
            incus_in(conf, &["delete", "--force", &name]).await?;
            carried = Some(dir);
        }
        let mut init =
            vec!["init".to_string(), target(&c.remote, &c.image), name.clone(), "-c".into(), label(l, c), "-q".into()];
        if let Some(t) = &c.target {
            init.extend(["--target".to_string(), t.clone()]);
        }
        init.extend(super::confined_at_init(l));
        incus_in(conf, &init.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        if let Some(dir) = carried {
            let home = dir.path().join("root");
            incus_in(conf, &["file", "push", "-r", "-q", &home.display().to_string(), &format!("{name}/")]).await?;
        }
        Ok(())
    }

    /// A kept (stopped) container on a cluster member its `target` no longer names is moved there
    /// (`incus move --target`): the same container, home and all, on another member.
    async fn placed(c: &Container, location: &str) -> miette::Result<()> {
        let Some(want) = &c.target else { return Ok(()) };
        let conf = c.incus_config.as_deref();
        let fits = match want.strip_prefix('@') {
            Some(group) => query_in(conf, &c.remote, &format!("/1.0/cluster/groups/{group}"))
                .await
                .and_then(|g| g["members"].as_array().cloned())
                .is_some_and(|m| m.iter().any(|m| m.as_str() == Some(location))),
            None => want == location,
        };
        if !fits {
            incus_in(conf, &["move", &target(&c.remote, &c.name), "--target", want, "-q"]).await?;
        }
        Ok(())
    }

    /// The address the gateway's port is published on: `listen`, or, for a container on a cluster
    /// whose `listen` was not written out, the address of the member it is on.
    async fn publish_address(c: &Container) -> miette::Result<(String, Option<String>)> {
        let conf = c.incus_config.as_deref();
        let listen = c.listen.clone().ok_or_else(|| miette!("no address to publish container {} on", c.name))?;
        let location = query_in(conf, &c.remote, &format!("/1.0/instances/{}", c.name))
            .await
            .and_then(|v| v["location"].as_str().map(str::to_string))
            .filter(|l| !l.is_empty() && l != "none");
        let Some(member) = location else { return Ok((listen, None)) };
        if !c.listen_on_member {
            return Ok((listen, Some(member)));
        }
        let url = query_in(conf, &c.remote, &format!("/1.0/cluster/members/{member}"))
            .await
            .and_then(|m| m["url"].as_str().map(str::to_string))
            .ok_or_else(|| miette!("cannot read the address of cluster member {member}"))?;
        let ip = url
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| miette!("cluster member {member} has no usable address ({url})"))?;
        Ok((ip, Some(member)))
    }

    pub async fn place(l: &Launch, c: &Container, files: &[HomeFile]) -> miette::Result<()> {
        ensure(l, c).await?;
        let conf = c.incus_config.as_deref();
        let name = target(&c.remote, &c.name);
        let staging = tempfile::tempdir().into_diagnostic()?;
        for f in files {
            let inside = Path::new("/root").join(&f.path);
            if pull(c, &inside).await.ok().flatten().as_deref() == Some(f.content.as_slice()) {
                continue;
            }
            // Staged in a private directory (0700) only as long as the push takes.
            let local = staging.path().join("file");
            crate::fsutil::write_atomic(&local, &f.content, f.mode).into_diagnostic()?;
            let mode = format!("{:o}", f.mode);
            let dest = format!("{name}{}", inside.display());
            incus_in(
                conf,
                &["file", "push", "-q", "--create-dirs", "--mode", &mode, &local.display().to_string(), &dest],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn start(l: &Launch, c: &Container) -> miette::Result<Handle> {
        ensure(l, c).await?;
        let conf = c.incus_config.as_deref();
        let name = target(&c.remote, &c.name);
        let (ip, member) = publish_address(c).await?;
        let at = Container { listen: Some(ip.clone()), ..c.clone() };
        for (device, props) in devices(l, &at) {
            // A kept container has them from before: set afresh (the address or ports may have changed).
            let _ = incus_in(conf, &["config", "device", "remove", &name, &device, "-q"]).await;
            let mut args = vec!["config", "device", "add", &name, &device, "proxy"];
            args.extend(props.iter().map(String::as_str));
            args.push("-q");
            incus_in(conf, &args).await?;
        }
        let confined = super::confined(l);
        let mut set = vec!["config", "set", name.as_str()];
        set.extend(confined.iter().map(String::as_str));
        incus_in(conf, &set).await?;
        incus_in(conf, &["start", &name]).await?;
        Ok(Handle::Container(ContainerHandle { listen: Some(ip), member, ..handle(c) }))
    }

    /// `path` of the home (a directory) pulled into the same place under `l.home` here, then
    /// deleted there. Staged beside its destination and renamed into place, so a run killed
    /// half-way leaves either the old state or the new one; the next run does it again.
    pub async fn bring_here(l: &Launch, c: &Container, path: &Path) -> miette::Result<()> {
        let conf = c.incus_config.as_deref();
        let inside = format!("{}/root/{}", target(&c.remote, &c.name), path.display());
        let dest = l.home.join(path);
        let (Some(parent), Some(leaf)) = (dest.parent(), dest.file_name()) else { return Ok(()) };
        if !has(c, &Path::new("/root").join(path)).await {
            return Ok(());
        }
        std::fs::create_dir_all(parent).into_diagnostic()?;
        let staging = parent.join(format!(".incoming-{}", leaf.to_string_lossy()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).into_diagnostic()?;
        incus_in(conf, &["file", "pull", "-r", "-q", &inside, &staging.display().to_string()]).await?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(staging.join(leaf), &dest).into_diagnostic()?;
        let _ = std::fs::remove_dir_all(&staging);
        incus_in(conf, &["file", "delete", "-f", &inside]).await?;
        Ok(())
    }

    /// `path` under `l.home` here pushed into the container's home at the same place — what was
    /// there is deleted first, so the container's copy is the pushed one whole — then removed here.
    /// The copy here goes only after a push that finished: a run killed half-way leaves it, and the
    /// next run pushes it again.
    pub async fn send_there(l: &Launch, c: &Container, path: &Path) -> miette::Result<()> {
        let local = l.home.join(path);
        if !tokio::fs::try_exists(&local).await.unwrap_or(false) {
            return Ok(());
        }
        let conf = c.incus_config.as_deref();
        let name = target(&c.remote, &c.name);
        let inside = Path::new("/root").join(path);
        if has(c, &inside).await {
            incus_in(conf, &["file", "delete", "-f", &format!("{name}{}", inside.display())]).await?;
        }
        let parent = inside.parent().unwrap_or(Path::new("/root"));
        let into = format!("{name}{}/", parent.display());
        incus_in(conf, &["file", "push", "-r", "-q", "--create-dirs", &local.display().to_string(), &into]).await?;
        tokio::fs::remove_dir_all(&local)
            .await
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot remove {} once pushed", local.display()))
    }

    /// Whether the container holds `inside` (an absolute path), asked through the file API.
    pub async fn has(c: &Container, inside: &Path) -> bool {
        let at = format!("/1.0/instances/{}/files?path={}", c.name, inside.display());
        incus_in(c.incus_config.as_deref(), &["query", &target(&c.remote, &at)]).await.is_ok()
    }

    /// A file of the container (absolute path inside); None when Incus says it is not there, an
    /// error when it cannot be asked (a cluster member just back, a host away): taken for "not
    /// there", the gateway's config would be written anew, every agent's entry lost (the likeliest
    /// cause of the hosts test's failure of 2026-12-07).
    pub async fn pull(c: &Container, inside: &Path) -> miette::Result<Option<Vec<u8>>> {
        let name = target(&c.remote, &c.name);
        match incus_in(c.incus_config.as_deref(), &["file", "pull", &format!("{name}{}", inside.display()), "-"]).await
        {
            Ok(text) => Ok(Some(text.into_bytes())),
            Err(e) if format!("{e:?}").to_ascii_lowercase().contains("not found") => Ok(None),
            Err(e) => Err(e.wrap_err(format!("cannot read {} in container {}", inside.display(), c.name))),
        }
    }
}
