//! `--target ADDRESS`: a plan narrowed to the named resources and what they need, as in
//! Terraform. A created or updated target brings the resources it depends on (transitively);
//! a deleted one brings what recorded a dependency on it (they must let go first). Pure.

use std::collections::{BTreeMap, BTreeSet};

use miette::miette;

use super::Plan;
use crate::resource::{Address, Desired};
use crate::state::Record;

pub fn select(
    plan: Plan,
    desired: &Desired,
    prior: &BTreeMap<String, Record>,
    targets: &[Address],
) -> miette::Result<Plan> {
    let mut keep = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    for t in targets {
        let a = t.to_string();
        if !desired.contains_key(&a) && !prior.contains_key(&a) {
            return Err(miette!(
                help = "`fleet plan` lists what the fleet file declares; `fleet state` what is recorded",
                "no resource {a} in the fleet file or its state"
            ));
        }
        todo.push(a);
    }
    while let Some(a) = todo.pop() {
        if !keep.insert(a.clone()) {
            continue;
        }
        match desired.get(&a) {
            Some(r) => todo.extend(r.dep_strings()),
            // Going away: whatever recorded a dependency on it goes (or lets go) first.
            None => todo.extend(prior.values().filter(|r| r.deps.contains(&a)).map(|r| r.address.clone())),
        }
    }
    let changes: Vec<_> = plan.changes.into_iter().filter(|c| keep.contains(&c.address)).collect();
    let unchanged = keep
        .iter()
        .filter(|a| desired.contains_key(*a))
        .count()
        .saturating_sub(changes.iter().filter(|c| desired.contains_key(&c.address)).count());
    Ok(Plan { changes, unchanged, scope: Some(keep), order: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{diff, Action};
    use crate::resource::{add, Resource};
    use serde_json::json;

    fn res(a: &str, deps: &[&str]) -> Resource {
        let deps = deps.iter().map(|d| d.parse().unwrap()).collect();
        Resource::new(a.parse().unwrap(), &json!({"a": a}), deps)
    }

    #[test]
    fn a_target_brings_what_it_depends_on_and_nothing_else() {
        let mut d = Desired::new();
        add(&mut d, res("litellm.config", &[]));
        add(&mut d, res("key.alice", &["litellm.config"]));
        add(&mut d, res("key.bob", &["litellm.config"]));
        let plan = diff(&d, &BTreeMap::new(), &BTreeMap::new());
        let p = select(plan, &d, &BTreeMap::new(), &["key.alice".parse().unwrap()]).unwrap();
        let got: Vec<&str> = p.changes.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(got, vec!["key.alice", "litellm.config"]);
        assert!(p.changes.iter().all(|c| c.action == Action::Create));
        let e = select(Plan::default(), &d, &BTreeMap::new(), &["key.carol".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("no resource key.carol"), "{e}");
    }
}
