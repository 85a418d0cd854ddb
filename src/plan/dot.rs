//! The desired graph as Graphviz DOT (`fleet graph | dot -Tsvg`).

use std::fmt::Write;

use crate::resource::Desired;

pub fn dot(fleet: &str, desired: &Desired) -> String {
    let mut out = format!("digraph {fleet:?} {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for addr in desired.keys() {
        let _ = writeln!(out, "  {addr:?};");
    }
    for (addr, r) in desired {
        for dep in r.dep_strings() {
            let _ = writeln!(out, "  {dep:?} -> {addr:?};");
        }
    }
    out.push_str("}\n");
    out
}
