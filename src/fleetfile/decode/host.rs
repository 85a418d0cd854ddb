//! `host "name" runtime=… { … }`: where gateways run (this machine, an Incus remote or cluster).

use std::path::Path;

use super::common::{check_slug, secret};
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub(super) fn host(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Host> {
    let mut r = Reader::new(n, p);
    let name = r.name("host \"local\" runtime=\"process\"");
    let runtime = match r.str_opt("runtime") {
        None => Some(Runtime::Process),
        Some(s) => match s.value.as_str() {
            "process" => Some(Runtime::Process),
            "incus" => Some(Runtime::Incus),
            other => {
                r.problems.push(
                    Problem::new(format!("unknown runtime {other:?}"), s.span, "unknown runtime")
                        .help(choices_help(other, &Runtime::ALL)),
                );
                None
            }
        },
    };
    let remote = r.str_opt("remote");
    let address = r.str_opt("address");
    let trust_token = secret(&mut r, "trust-token", base, "EDGE_TOKEN");
    let incus_config = r.str_opt("incus-config");
    let arch_raw = r.str_opt("arch");
    let arch_declared = arch_raw.is_some();
    let arch = match arch_raw {
        None => Some(Arch::native()),
        Some(s) => {
            let a = Arch::parse(&s.value);
            match a {
                None => r.problems.push(
                    Problem::new(format!("unknown architecture {:?}", s.value), s.span, "unknown")
                        .help(choices_help(&s.value, &Arch::ALL)),
                ),
                // A process host is this machine: it runs its own architecture's Node and images only.
                Some(a) if runtime == Some(Runtime::Process) && a != Arch::native() => r.problems.push(
                    Problem::new(
                        format!("a process host runs on this machine, which is {}", Arch::native().as_str()),
                        s.span,
                        "not this machine's architecture",
                    )
                    .help("drop `arch` (it defaults to this machine's), or use an incus host of that architecture"),
                ),
                Some(_) => {}
            }
            a
        }
    };
    r.finish();
    let name = name?;
    check_slug(p, "host", &name);
    if runtime == Some(Runtime::Process) {
        let incus_only = [("remote", remote.as_ref().map(|r| r.span)), ("address", address.as_ref().map(|a| a.span))]
            .into_iter()
            .chain([("trust-token", trust_token.as_ref().map(|t| t.span))])
            .chain([("incus-config", incus_config.as_ref().map(|c| c.span))]);
        for (key, span) in incus_only {
            if let Some(span) = span {
                p.push(
                    Problem::new(
                        format!("`{key}` only applies to the incus runtime"),
                        span,
                        "ignored by the process runtime",
                    )
                    .help(format!("set runtime=\"incus\" or drop `{key}`")),
                );
            }
        }
    }
    if let (Some(rem), Some(addr)) = (&remote, &address) {
        p.push(
            Problem::new("a host takes either `remote` or `address`", addr.span, "and an address")
                .also(rem.span, "a remote")
                .help("`remote` names a remote already in the Incus client config; `address` (with `trust-token`) has fleet enrol the host itself: keep one"),
        );
    }
    if let Some(a) = &address {
        if let Err(why) = check_incus_address(&a.value) {
            p.push(Problem::new(format!("invalid host address {:?}", a.value), a.span, why).help(
                "write the incusd's HTTPS address, as `core.https_address` sets it: `address=\"https://10.0.0.2:8443\"`",
            ));
        }
    }
    if let (Some(t), None) = (&trust_token, &address) {
        p.push(
            Problem::new("`trust-token` without an `address`", t.span, "nothing to redeem it at")
                .help("add the host's `address=\"https://…:8443\"`; a host given by `remote` is enrolled already"),
        );
    }
    Some(Host {
        name,
        runtime: runtime?,
        remote: remote.map(|r| r.value),
        address,
        trust_token,
        incus_config: incus_config.map(|c| base.join(c.value)),
        arch: arch?,
        arch_declared,
    })
}

/// An incusd's HTTPS address: `https://HOST:PORT` (the port may be left out: 8443).
pub(super) fn check_incus_address(a: &str) -> Result<(), &'static str> {
    let rest = a.strip_prefix("https://").ok_or("not an https:// URL")?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains(char::is_whitespace) {
        return Err("expected https://HOST:PORT");
    }
    // `HOST:PORT`, `[V6]:PORT`, or a host alone (Incus's default port).
    if let Some((host, port)) = rest.rsplit_once(':').filter(|(_, p)| !p.contains(']')) {
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return Err("expected https://HOST:PORT");
        }
        port.parse::<u16>().map_err(|_| "the port is not a number")?;
    }
    Ok(())
}
