//! `provider "name" type=… { model … }`: an LLM provider and the models it offers.

use std::path::Path;

use super::common::{check_slug, secret};
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub(super) fn provider(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Provider> {
    let mut r = Reader::new(n, p);
    let name = r.name("provider \"demo\" type=\"mock\" { model \"demo-small\" }");
    let type_value = r.str_opt("type");
    let kind = type_value.as_ref().and_then(|t| {
        let k = ProviderKind::parse(&t.value);
        if k.is_none() {
            r.problems.push(
                Problem::new(format!("unknown provider type {:?}", t.value), t.span, "unknown type")
                    .help(choices_help(&t.value, &ProviderKind::ALL)),
            );
        }
        k
    });
    let env_example = match kind {
        Some(ProviderKind::OpenAi) => "OPENAI_API_KEY".to_string(),
        Some(ProviderKind::Anthropic) => "ANTHROPIC_API_KEY".to_string(),
        Some(ProviderKind::OpenRouter) => "OPENROUTER_API_KEY".to_string(),
        _ => match &name {
            Some(n) => {
                format!("{}_API_KEY", n.value.to_ascii_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
            }
            None => "API_KEY".to_string(),
        },
    };
    let api_key = secret(&mut r, "api-key", base, &env_example);
    let url = r.str_opt("url");
    let mut models: Vec<ModelDecl> =
        r.list("models").into_iter().map(|m| ModelDecl { name: m, response: None, price: None }).collect();
    for m in r.children("model") {
        let mut mr = Reader::new(m, r.problems);
        let name = mr.name("model \"demo-small\" response=\"Hello!\"");
        let response = mr.str_opt("response");
        let price = crate::fleetfile::decode_spend::price(&mut mr);
        mr.finish();
        if let (Some(resp), Some(k)) = (&response, kind) {
            if k != ProviderKind::Mock {
                r.problems.push(
                    Problem::new("`response` only applies to mock models", resp.span, "ignored by a real provider")
                        .help("drop `response`, or make this provider type=\"mock\""),
                );
            }
        }
        if let Some(name) = name {
            models.push(ModelDecl { name, response: response.map(|r| r.value), price });
        }
    }
    let span = r.span();
    let syntax = r.syntax();
    let type_attempted = r.attempted("type");
    let models_attempted = r.attempted("models") || r.attempted("model");
    let url_attempted = r.attempted("url");
    let key_attempted = r.attempted("api-key");
    r.finish();
    if type_value.is_none() && !type_attempted {
        let what = match &name {
            Some(n) => format!("provider {:?}", n.value),
            None => "a provider".to_string(),
        };
        let span = name.as_ref().map(|n| n.span).unwrap_or(span);
        p.push(Problem::new(format!("{what} needs a `type`"), span, "type missing").help(format!(
            "add `{}`, one of: {}",
            syntax.assign("type", "\"…\""),
            ProviderKind::ALL.join(", ")
        )));
    }
    let name = name?;
    check_slug(p, "provider", &name);
    let kind = kind?;
    let span = name.span;
    if models.is_empty() && !models_attempted {
        p.push(Problem::new(format!("provider {:?} offers no models", name.value), span, "no models").help(format!(
            "list them: `{}`",
            syntax.pick("models \"gpt-4o-mini\" \"gpt-4o\"", "models = [\"gpt-4o-mini\", \"gpt-4o\"]")
        )));
    }
    if kind == ProviderKind::OpenAiCompatible && url.is_none() && !url_attempted {
        p.push(
            Problem::new(format!("provider {:?} (openai-compatible) needs a `url`", name.value), span, "url missing")
                .help(format!(
                    "add the server's OpenAI-style base URL: `{}`",
                    syntax.assign("url", "\"http://host:8000/v1\"")
                )),
        );
    }
    if kind.needs_key() && api_key.is_none() && !key_attempted {
        p.push(
            Problem::new(
                format!("provider {:?} ({}) needs an `api-key`", name.value, kind.as_str()),
                span,
                "api-key missing",
            )
            .help(format!(
                "reference it, never inline it: `{}`",
                syntax.assign("api-key", &format!("\"env:{env_example}\""))
            )),
        );
    }
    if let Some(u) = &url {
        if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
            p.push(
                Problem::new("`url` must start with http:// or https://", u.span, "not an http URL")
                    .help(format!("for example: `{}`", syntax.assign("url", "\"http://host:8000/v1\""))),
            );
        }
    }
    Some(Provider { name, kind, api_key, url: url.map(|u| u.value), models })
}
