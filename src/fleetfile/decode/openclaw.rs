//! `openclaw { version …; node … }`: the pinned OpenClaw and Node.

use super::common::node_version_ok;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub(super) fn openclaw(n: &RawNode, p: &mut Problems) -> OpenClaw {
    let mut r = Reader::new(n, p);
    let version = r.str_opt("version");
    let node = r.str_opt("node");
    r.finish();
    if let Some(v) = &node {
        if !node_version_ok(&v.value) {
            p.push(Problem::new(format!("OpenClaw refuses Node {}", v.value), v.span, "refused Node version").help(
                format!("OpenClaw needs Node >=24.16.0 <25 or >=26.1.0; fleet's default is {DEFAULT_NODE_VERSION}"),
            ));
        }
    }
    OpenClaw {
        version: version.map(|v| v.value).unwrap_or_else(|| DEFAULT_OPENCLAW_VERSION.to_string()),
        node: node.map(|v| v.value).unwrap_or_else(|| DEFAULT_NODE_VERSION.to_string()),
    }
}
