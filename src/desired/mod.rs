//! The fleet model → the desired resources, one file per subsystem: `litellm` (secrets,
//! config, install, proxy, one key per agent), `openclaw` (toolchain, gateways, agents,
//! one models patch per gateway, wakes), `image` (image files and their imports), `host` (other machines' incusd) and `serve`
//! (the daemon, its admin token, the agents' tokens).
//! Each resource's inputs are built from its kind's inputs type, the same type its
//! driver reads them back through. The only I/O: reading image recipes, whose content
//! (not just their path) decides when an image is rebuilt, and what fleet's binary is.

mod host;
mod image;
mod litellm;
mod openclaw;
mod serve;

use crate::fleetfile::FleetSpec;
use crate::layout::Layout;
use crate::resource::Desired;

pub use litellm::{key_alias, proxy_base_url};
pub use openclaw::{default_wake, gateway_ref, GATEWAY_START_TIMEOUT_S};

/// Everything the fleet file asks for, by address.
pub fn desired(spec: &FleetSpec, layout: &Layout) -> miette::Result<Desired> {
    let recipes = image::recipe_fingerprints(spec)?;
    let mut out = Desired::new();
    litellm::add(spec, layout, &mut out);
    openclaw::add(spec, layout, &recipes, &mut out);
    serve::add(spec, layout, &mut out);
    host::add(spec, layout, &mut out);
    Ok(out)
}
