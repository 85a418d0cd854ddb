//! The LiteLLM proxy: its host (the only one, or the one given — never another machine), its
//! defaults, its default model, and where its call events go (the daemon's ingest when there is one).

use miette::SourceSpan;

use super::names::Index;
use crate::fleetfile::decode::LitellmRaw;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};

/// The proxy, and where its port is written (None: the default).
pub fn litellm(
    p: &mut Problems,
    idx: &Index,
    raw: Option<LitellmRaw>,
    serve: Option<&Serve>,
    first_span: SourceSpan,
) -> (Litellm, Option<SourceSpan>) {
    let syntax = idx.syntax;
    let declared = raw.is_some();
    let span = raw.as_ref().map(|l| l.span).unwrap_or(first_span);
    let keys_url_span = raw.as_ref().and_then(|l| l.keys_url_span);
    let raw = raw.unwrap_or(LitellmRaw {
        span,
        host: None,
        host_attempted: false,
        port: None,
        bind: None,
        version: None,
        path: None,
        keys: KeyBackend::File,
        keys_url_span: None,
        master_key: None,
        default_model: None,
        callback: None,
        start_timeout_s: None,
    });
    // With a daemon, the proxy's call events go to its trace ingest unless the file says where.
    let callback =
        raw.callback.or_else(|| serve.map(|sv| Callback { url: format!("{}/v1/trace", sv.url()), token: None }));
    if let Some(dm) = &raw.default_model {
        idx.check_model(p, dm, "default");
    }
    let hosts = idx.hosts;
    let host = if !declared && hosts.len() > 1 {
        // Nothing in the file to point at but the hosts that make the choice necessary.
        if !idx.any_broken("host") {
            p.push(
                Problem::new(
                    "the LiteLLM proxy needs a `host`: the fleet has several",
                    hosts[1].name.span,
                    "another host",
                )
                .also(hosts[0].name.span, "one host")
                .help(format!(
                    "say where it runs: `{}`",
                    syntax.pick(
                        &format!("litellm host=\"{}\"", hosts[0].name.value),
                        &format!("[litellm] host = \"{}\"", hosts[0].name.value)
                    )
                )),
            );
        }
        Spanned::new(String::new(), span)
    } else {
        idx.resolve_host(p, raw.host, raw.host_attempted, "`litellm`", span)
    };
    let litellm = Litellm {
        host,
        port: raw.port.as_ref().map(|p| p.value).unwrap_or(DEFAULT_LITELLM_PORT),
        bind: raw.bind.unwrap_or_else(|| "127.0.0.1".to_string()),
        version: raw.version.map(|v| v.value).unwrap_or_else(|| DEFAULT_LITELLM_VERSION.to_string()),
        path: raw.path,
        keys: raw.keys,
        keys_url_span,
        master_key: raw.master_key,
        default_model: raw.default_model,
        callback,
        start_timeout_s: raw.start_timeout_s.unwrap_or(DEFAULT_PROXY_START_TIMEOUT_S),
    };
    if let Some(h) = hosts.iter().find(|h| h.name.value == litellm.host.value && h.is_remote()) {
        p.push(
            Problem::new(
                format!("the LiteLLM proxy is placed on host {:?}, another machine", h.name.value),
                litellm.host.span,
                "a remote Incus host",
            )
            .also(h.name.span, "declared with a remote/address here")
            .help("the proxy runs on this machine (its master key never leaves it): give `litellm` a host of this machine"),
        );
    }
    (litellm, raw.port.map(|p| p.span))
}
