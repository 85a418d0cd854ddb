//! Spend control in the fleet file: `budget usd=5 per="day"` and `limits rpm=60 tpm=200000` (on
//! an agent, or on `fleet` as every agent's default), and a model's declared price
//! (`input-cost=0.15 output-cost=0.6`, USD per million tokens).

use super::model::{Budget, Price, Spend, Window};
use crate::syntax::diagnostic::{choices_help, Problem};
use crate::syntax::reader::Reader;

/// The largest budget fleet takes (USD per window): a typo guard, not a policy.
const MAX_USD: f64 = 1_000_000.0;
/// USD per million tokens; the dearest models today cost a few hundred.
const MAX_PRICE: f64 = 100_000.0;

/// Reads the `budget` and `limits` children of an agent or of `fleet`.
pub fn spend(r: &mut Reader) -> Spend {
    let syntax = r.syntax();
    let mut out = Spend::default();
    if let Some(b) = r.child("budget") {
        let mut br = Reader::new(b, r.problems);
        let usd = br.num_opt("usd", 0.0, MAX_USD);
        let per = br.str_opt("per");
        let usd_attempted = br.positional_means("usd") || br.attempted("usd");
        let per_attempted = br.attempted("per");
        br.finish();
        let window = per.as_ref().and_then(|p| {
            let w = Window::parse(&p.value);
            if w.is_none() {
                r.problems.push(
                    Problem::new(format!("unknown budget window {:?}", p.value), p.span, "unknown window")
                        .help(format!("{} (windows are UTC)", choices_help(&p.value, &Window::ALL))),
                );
            }
            w
        });
        let example = syntax.pick("budget usd=5 per=\"day\"", "budget = { usd = 5, per = \"day\" }");
        if usd.is_none() && !usd_attempted {
            r.problems.push(
                Problem::new("`budget` needs `usd`", b.name_span, "amount missing")
                    .help(format!("say how much the agent may spend per window: `{example}`")),
            );
        }
        if per.is_none() && !per_attempted {
            r.problems.push(
                Problem::new("`budget` needs `per`", b.name_span, "window missing")
                    .help(format!("say which window the amount is for (hour, day, week or month, UTC): `{example}`")),
            );
        }
        if let Some(u) = usd.as_ref().filter(|u| u.value <= 0.0) {
            r.problems.push(
                Problem::new("a budget of $0 lets no call through", u.span, "zero budget")
                    .help("give a positive amount, or remove the agent's model access by removing the agent"),
            );
        }
        if let (Some(usd), Some(per)) = (usd.filter(|u| u.value > 0.0), window) {
            out.budget = Some(Budget { usd: usd.value, per, span: b.name_span });
        }
    }
    if let Some(l) = r.child("limits") {
        let mut lr = Reader::new(l, r.problems);
        out.rpm = lr.int_opt("rpm", 1, 1_000_000_000).map(|v| v.value as u64);
        out.tpm = lr.int_opt("tpm", 1, 1_000_000_000_000).map(|v| v.value as u64);
        let attempted = lr.attempted("rpm") || lr.attempted("tpm");
        lr.finish();
        if out.rpm.is_none() && out.tpm.is_none() && !attempted {
            r.problems.push(Problem::new("`limits` sets nothing", l.name_span, "empty").help(format!(
                "give requests and/or tokens per minute: `{}`",
                syntax.pick("limits rpm=60 tpm=200000", "limits = { rpm = 60, tpm = 200000 }")
            )));
        }
    }
    out
}

/// Reads a model's `input-cost` and `output-cost` (both or neither).
pub fn price(r: &mut Reader) -> Option<Price> {
    let input = r.num_opt("input-cost", 0.0, MAX_PRICE);
    let output = r.num_opt("output-cost", 0.0, MAX_PRICE);
    match (input, output) {
        (Some(i), Some(o)) => Some(Price { input_per_mtok: i.value, output_per_mtok: o.value }),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            if !(r.attempted("input-cost") && r.attempted("output-cost")) {
                let example =
                    r.syntax().pick("input-cost=0.15 output-cost=0.6", "input-cost = 0.15, output-cost = 0.6");
                r.problems.push(
                    Problem::new("a price needs both `input-cost` and `output-cost`", one.span, "half a price")
                        .help(format!("give both, in USD per million tokens: `{example}`")),
                );
            }
            None
        }
    }
}
