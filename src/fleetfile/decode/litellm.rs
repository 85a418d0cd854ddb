//! `litellm { … }`: the proxy, its keys and callback, before defaults from other nodes.

use std::path::{Path, PathBuf};

use miette::SourceSpan;

use super::common::{parse_duration, secret};
use crate::fleetfile::model::*;
use crate::fleetfile::secret::SecretRef;
use crate::syntax::diagnostic::{choices_help, Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub struct LitellmRaw {
    pub span: SourceSpan,
    pub host: Option<Spanned<String>>,
    /// `host` is written but invalid (already reported).
    pub host_attempted: bool,
    pub port: Option<Spanned<u16>>,
    pub bind: Option<String>,
    pub version: Option<Spanned<String>>,
    pub path: Option<PathBuf>,
    pub keys: KeyBackend,
    pub keys_url_span: Option<miette::SourceSpan>,
    pub master_key: Option<Spanned<SecretRef>>,
    pub default_model: Option<Spanned<String>>,
    pub callback: Option<Callback>,
    pub start_timeout_s: Option<u64>,
}

pub(super) fn litellm(n: &RawNode, base: &Path, p: &mut Problems) -> LitellmRaw {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let host = r.str_opt("host");
    let mut port = r.int_opt("port", 1, 65535).map(|v| Spanned::new(v.value as u16, v.span));
    let mut bind = r.str_opt("bind").map(|s| s.value);
    let listen = r.str_opt("listen");
    let version = r.str_opt("version");
    let path = r.str_opt("path").map(|s| base.join(s.value));
    let master_key = secret(&mut r, "master-key", base, "LITELLM_MASTER_KEY");
    let default_model = r.str_opt("default-model");
    let callback_url = r.str_opt("callback-url");
    let callback_token = secret(&mut r, "callback-token", base, "FLEET_CALLBACK_TOKEN");
    let start_timeout = r.str_opt("start-timeout");
    // `keys "database" url="env:…"`; TOML also takes the plain `keys = "file"`.
    let keys_node = r.child("keys");
    let keys_word = if keys_node.is_none() { r.str_opt("keys") } else { None };
    let (kind, url, url_attempted, at) = match keys_node {
        Some(k) => {
            let mut kr = Reader::new(k, r.problems);
            let kind = kr.arg_or("backend", "a backend", "keys \"file\"");
            let url = secret(&mut kr, "url", base, "LITELLM_DATABASE_URL");
            let url_attempted = kr.attempted("url");
            kr.finish();
            (kind, url, url_attempted, k.name_span)
        }
        None => {
            let at = n.props.iter().find(|p| p.key == "keys").map(|p| p.key_span).unwrap_or(span);
            (keys_word, None, false, at)
        }
    };
    let keys_url_span = url.as_ref().map(|u| u.span);
    let keys = match kind.as_ref().map(|k| k.value.as_str()) {
        Some("file") | None => KeyBackend::File,
        Some("database") => match url {
            Some(url) => KeyBackend::Database { url: url.value },
            None if url_attempted => KeyBackend::File,
            None => {
                r.problems.push(Problem::new("the database key backend needs a `url`", at, "no url").help(format!(
                    "write `{}`",
                    r.problems.syntax.pick(
                        "keys \"database\" url=\"env:LITELLM_DATABASE_URL\"",
                        "keys = { backend = \"database\", url = \"env:LITELLM_DATABASE_URL\" }"
                    )
                )));
                KeyBackend::File
            }
        },
        Some(other) => {
            let span = kind.as_ref().map(|k| k.span).unwrap_or(at);
            r.problems.push(
                Problem::new(format!("unknown key backend {other:?}"), span, "unknown backend")
                    .help(choices_help(other, &["file", "database"])),
            );
            KeyBackend::File
        }
    };
    let host_attempted = r.attempted("host");
    r.finish();
    // `listen "IP:PORT"` (as `serve` says it): the address and port at once.
    if let Some(l) = listen {
        match (crate::netaddr::split_listen(&l.value), &bind, &port) {
            (Some((ip, at)), None, None) => {
                bind = Some(ip);
                port = Some(Spanned::new(at, l.span));
            }
            (Some(_), _, _) => p.push(
                Problem::new("`listen` and `bind`/`port` say the same thing twice", l.span, "one or the other")
                    .help("keep `listen \"IP:PORT\"`, or `bind` and `port`"),
            ),
            (None, _, _) => p.push(
                Problem::new(format!("invalid listen address {:?}", l.value), l.span, "not IP:PORT")
                    .help("write an IP address of this machine and a port, e.g. \"10.0.0.1:4000\""),
            ),
        }
    }
    if let Some(v) = &version {
        if v.value == "1.107.0" {
            p.push(
                Problem::new("litellm 1.107.0 is a known-compromised release", v.span, "refused")
                    .help(format!("pin another version; fleet's default is {DEFAULT_LITELLM_VERSION}")),
            );
        }
    }
    let start_timeout_s = start_timeout.and_then(|t| match parse_duration(&t.value) {
        Some(secs) => Some(secs),
        None => {
            p.push(
                Problem::new(format!("invalid duration {:?}", t.value), t.span, "not a duration")
                    .help("a whole number and a unit: \"90s\", \"2m\""),
            );
            None
        }
    });
    let callback = match callback_url {
        Some(u) if !(u.value.starts_with("http://") || u.value.starts_with("https://")) => {
            p.push(
                Problem::new("`callback-url` must start with http:// or https://", u.span, "not an http URL")
                    .help("e.g. \"http://127.0.0.1:8700/v1/events\""),
            );
            None
        }
        Some(u) => Some(Callback { url: u.value, token: callback_token }),
        None => None,
    };
    LitellmRaw {
        span,
        host,
        host_attempted,
        port,
        bind,
        version,
        path,
        keys,
        keys_url_span,
        master_key,
        default_model,
        callback,
        start_timeout_s,
    }
}
