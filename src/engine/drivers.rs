//! Which driver handles which kind of resource, for one fleet.

use std::sync::Arc;

use crate::driver::Drivers;
use crate::fleetfile::{FleetSpec, KeyBackend};
use crate::layout::Layout;
use crate::litellm::keys::{FileKeyStore, KeyStore};
use crate::litellm::resources::{FilesDriver, KeyDriver, SecretFileDriver};
use crate::resource::Kind;

/// `overwrite`: agent-owned workspace files (USER.md, MEMORY.md) are replaced too.
pub fn drivers(spec: &FleetSpec, layout: &Layout, overwrite: bool) -> Drivers {
    let store: Arc<dyn KeyStore> = match spec.litellm.keys {
        KeyBackend::File => FileKeyStore::open(&layout.keys_file()),
        KeyBackend::Database { .. } => {
            let master = match &spec.litellm.master_key {
                Some(r) => r.to_string(),
                None => format!("file:{}", layout.master_key_file().display()),
            };
            let url = crate::netaddr::http_url(&spec.litellm.bind, spec.litellm.port);
            Arc::new(crate::litellm::db_keys::DatabaseKeyStore::new(&url, &master))
        }
    };
    let mut d = Drivers::default();
    d.insert(Kind::Secret, Arc::new(SecretFileDriver));
    d.insert(Kind::LitellmConfig, Arc::new(FilesDriver));
    d.insert(Kind::LitellmInstall, Arc::new(crate::litellm::install::InstallDriver));
    d.insert(Kind::LitellmProxy, Arc::new(crate::litellm::proxy::ProxyDriver));
    d.insert(Kind::Key, Arc::new(KeyDriver { store }));
    d.insert(Kind::Toolchain, Arc::new(crate::openclaw::toolchain::ToolchainDriver));
    d.insert(Kind::Image, Arc::new(crate::image::resources::ImageDriver { cache: layout.cache_dir.clone() }));
    d.insert(Kind::Import, Arc::new(crate::image::resources::ImportDriver));
    d.insert(Kind::Gateway, Arc::new(crate::openclaw::gateway::GatewayDriver));
    let listings = Arc::new(crate::openclaw::agent::Listings::default());
    d.insert(Kind::Agent, crate::openclaw::agent::driver(overwrite, listings.clone(), layout.clone()));
    d.insert(Kind::GatewayModels, Arc::new(crate::openclaw::models::ModelsDriver { listings, layout: layout.clone() }));
    d.insert(Kind::Wake, Arc::new(crate::openclaw::wake::WakeDriver { layout: layout.clone() }));
    d.insert(Kind::Serve, Arc::new(crate::serve::process::ServeDriver));
    d.insert(Kind::AgentToken, Arc::new(crate::serve::agent_token::AgentTokenDriver));
    d.insert(Kind::Host, Arc::new(crate::runtime::incus_host::HostDriver));
    d
}
