//! `serve { … }` (the daemon) and `trace { otlp … }` (where it exports spans).

use std::path::Path;

use super::common::{parse_duration, secret};
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

/// `serve { listen "127.0.0.1:8700"; reply-timeout "3m" }` (TOML: `[serve] listen = …`).
pub(super) fn serve(n: &RawNode, p: &mut Problems) -> Option<Serve> {
    let mut r = Reader::new(n, p);
    let listen = r.str_opt("listen");
    let timeout = r.str_opt("reply-timeout");
    r.finish();
    let (bind, port) = match &listen {
        None => crate::netaddr::split_listen(DEFAULT_SERVE_LISTEN)?,
        Some(l) => match crate::netaddr::split_listen(&l.value) {
            Some(hp) => hp,
            None => {
                p.push(
                    Problem::new(format!("invalid listen address {:?}", l.value), l.span, "not IP:PORT")
                        .help(format!("write an IP address and a port, e.g. {DEFAULT_SERVE_LISTEN:?}")),
                );
                return None;
            }
        },
    };
    let reply_timeout_s = match timeout {
        None => DEFAULT_REPLY_TIMEOUT_S,
        Some(t) => match parse_duration(&t.value) {
            Some(s) => s,
            None => {
                p.push(
                    Problem::new(format!("invalid duration {:?}", t.value), t.span, "not a duration")
                        .help("write a number and a unit: \"90s\", \"3m\""),
                );
                return None;
            }
        },
    };
    Some(Serve { bind, port, reply_timeout_s, export: None })
}

/// `trace { otlp "URL" headers="env:…"; capture-content #false; project "…" }` (TOML: `[trace] otlp = "…"`,
/// `headers = "env:…"`).
pub(super) fn trace_export(n: &RawNode, base: &Path, p: &mut Problems) -> Option<TraceExport> {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let example = r.syntax().pick(
        "otlp \"http://127.0.0.1:4318/v1/traces\" headers=\"env:OTLP_HEADERS\"",
        "otlp = \"http://127.0.0.1:4318/v1/traces\"",
    );
    let capture_content = r.bool_opt("capture-content").map(|b| b.value).unwrap_or(false);
    let project = r.str_opt("project").map(|s| s.value);
    let (otlp, headers, attempted) = match r.child("otlp") {
        Some(c) => {
            let mut cr = Reader::new(c, r.problems);
            let url = cr.arg_str("the receiver's OTLP/HTTP traces endpoint", example);
            let headers = secret(&mut cr, "headers", base, "OTLP_HEADERS");
            cr.finish();
            (url, headers, true)
        }
        None => {
            let url = r.str_opt("otlp");
            let attempted = r.attempted("otlp");
            (url, None, attempted)
        }
    };
    let headers = headers.or_else(|| secret(&mut r, "headers", base, "OTLP_HEADERS"));
    r.finish();
    match otlp {
        Some(u) if u.value.starts_with("http://") || u.value.starts_with("https://") => {
            Some(TraceExport { otlp: u.value, headers: headers.map(|h| h.value), capture_content, project })
        }
        Some(u) => {
            p.push(
                Problem::new("`otlp` must be an http:// or https:// URL", u.span, "not an http URL")
                    .help(format!("the receiver's OTLP/HTTP traces endpoint: `{example}`")),
            );
            None
        }
        None => {
            if !attempted {
                p.push(
                    Problem::new("`trace` says nowhere to export to", span, "no `otlp`")
                        .help(format!("add the receiver's OTLP/HTTP traces endpoint: `{example}`")),
                );
            }
            None
        }
    }
}
