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
    Some(GatewayRaw { name, host, host_attempted, image, image_attempted, port, listen, target })
}
