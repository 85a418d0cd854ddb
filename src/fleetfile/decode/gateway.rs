//! `gateway "name" host=… { … }`: one OpenClaw gateway, before its host's defaults.

use super::common::check_slug;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub struct GatewayRaw {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    /// `host` is written but invalid (already reported).
    pub host_attempted: bool,
    pub image: Option<Spanned<String>>,
    /// `image` is written but invalid (already reported).
    pub image_attempted: bool,
    pub port: Option<Spanned<u16>>,
    /// `listen="10.0.0.2"`: the address of its (remote) host where fleet reaches it.
    pub listen: Option<Spanned<String>>,
    /// `target="m2"` / `target="@gpu"`: the cluster member or group it runs on.
    pub target: Option<Spanned<String>>,
    pub limits: Limits,
    pub sandbox: Option<Sandbox>,
}

pub(super) fn gateway(n: &RawNode, p: &mut Problems) -> Option<GatewayRaw> {
    let mut r = Reader::new(n, p);
    let name = r.name("gateway \"main\" host=\"local\"");
    let host = r.str_opt("host");
    let image = r.str_opt("image");
    let port = r.int_opt("port", 1024, 65535).map(|v| Spanned::new(v.value as u16, v.span));
    let listen = r.str_opt("listen");
    let target = r.str_opt("target");
    let host_attempted = r.attempted("host");
    let image_attempted = r.attempted("image");
    let limits = r.child("limits").map(|l| limits(l, r.problems)).unwrap_or_default();
    let sandbox = r.child("sandbox").and_then(|s| super::sandbox::sandbox(s, r.problems));
    r.finish();
    let name = name?;
    check_slug(p, "gateway", &name);
    // `listen "10.0.0.2"` or `listen "10.0.0.2:18789"` (the port then is the gateway's `port`).
    let mut port = port;
    let mut listen = listen;
    if let Some(l) = listen.take() {
        match (l.value.parse::<std::net::IpAddr>(), crate::netaddr::split_listen(&l.value)) {
            (Ok(_), _) => listen = Some(l),
            (_, Some((ip, at))) => {
                match &port {
                    Some(p0) if p0.value != at => p.push(
                        Problem::new(format!("`listen` says port {at}, `port` says {}", p0.value), l.span, "two ports")
                            .also(p0.span, "here")
                            .help("write the port once: in `listen`, or in `port`"),
                    ),
                    _ => port = Some(Spanned::new(at, l.span)),
                }
                listen = Some(Spanned::new(ip, l.span));
            }
            _ => p.push(
                Problem::new(format!("`listen` must be an IP address, not {:?}", l.value), l.span, "not an IP address")
                    .help("the address of the gateway's host that fleet reaches, e.g. listen=\"10.0.0.2\" or \"10.0.0.2:18789\""),
            ),
        }
    }
    if let Some(t) = &target {
        let member = t.value.strip_prefix('@').unwrap_or(&t.value);
        if member.is_empty() || !member.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            p.push(
                Problem::new(format!("`target` {:?} is not a cluster member or group name", t.value), t.span, "not a member")
                    .help("a member (`target=\"m2\"`) or a group with `@` (`target=\"@gpu\"`), as `incus cluster list` names them"),
            );
        }
    }
    Some(GatewayRaw { name, host, host_attempted, image, image_attempted, port, listen, target, limits, sandbox })
}

/// The least memory a gateway is given: an OpenClaw 2026.9.6 gateway with two agents peaked at
/// 1.3 GB resident after their first turns (measured on this machine kind); below 1 GiB it cannot
/// run a turn at all.
const MIN_MEMORY: u64 = 1 << 30;

/// `limits memory="2GiB" cpus=1.5 processes=512`.
fn limits(n: &RawNode, p: &mut Problems) -> Limits {
    let mut r = Reader::new(n, p);
    let memory = r.str_opt("memory");
    let cpus = r.num_opt("cpus", 0.01, 1024.0);
    let processes = r.int_opt("processes", 16, 4_194_304);
    r.finish();
    let memory = memory.and_then(|m| match parse_bytes(&m.value) {
        Some(b) if b >= MIN_MEMORY => Some(b),
        Some(_) => {
            p.push(
                Problem::new(format!("`memory` {:?} is too little for a gateway", m.value), m.span, "below 1GiB")
                    .help("an OpenClaw gateway with two agents takes ~1.3 GB itself: give it \"2GiB\" and what its agents' tools need on top"),
            );
            None
        }
        None => {
            p.push(
                Problem::new(format!("`memory` {:?} is not a size", m.value), m.span, "not a size").help(
                    "write a number of bytes with a unit: \"512MiB\", \"2GiB\" (KiB, MiB, GiB, TiB; KB, MB, GB, TB)",
                ),
            );
            None
        }
    });
    let processes = processes.map(|v| v.value as u64);
    Limits { memory, cpus: cpus.map(|c| (c.value * 100.0).round() / 100.0), processes }
}

/// "2GiB", "512MiB", "1.5GB", "1048576" → bytes.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let at = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = (s[..at].trim(), s[at..].trim());
    let n: f64 = num.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    let b = n * mult;
    (b < u64::MAX as f64).then_some(b as u64)
}
