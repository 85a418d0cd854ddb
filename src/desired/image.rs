//! Images → resources: `image.<name>[<arch>]` (fetched by URL and verified, or built from
//! a recipe) and `import.<name>@<host>` (into the host's Incus, or a process host's image
//! store), once per host however many gateways use it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use miette::WrapErr;

use crate::fleetfile::{Arch, FleetSpec, Gateway, Host, Runtime};
use crate::image::resources::{ImageInputs, ImportInputs};
use crate::layout::Layout;
use crate::resource::{add as put, Address, Desired, Resource};

/// Image name → its recipe's content fingerprint (recipe, the files it copies, its lock), read
/// now so a changed recipe shows in the plan.
pub fn recipe_fingerprints(spec: &FleetSpec) -> miette::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for image in &spec.images {
        if let Some(path) = &image.recipe {
            let recipe = crate::image::recipe::load(&path.value).map_err(miette::Report::new)?;
            let fp = crate::image::build::fingerprint(&recipe, Arch::Amd64)
                .wrap_err_with(|| format!("image {}: recipe {}", image.name.value, path.value.display()))?;
            out.insert(image.name.value.clone(), fp);
        }
    }
    Ok(out)
}

/// What a gateway that names an image gets from it.
pub struct ImageUse {
    /// `import.<image>@<host>`: the gateway waits for it.
    pub import: Address,
    /// What the image is (its sha256, or its recipe's fingerprint): a new one restarts the gateway.
    pub source: Option<String>,
    /// On a process host: where the image's `/usr/local` is unpacked.
    pub root: Option<PathBuf>,
}

/// An image's tarball for `arch`: its `image.<name>[<arch>]` resource (fetched by URL and verified,
/// or built from its recipe), added to `out` unless there; where the tarball will be, and what it is.
pub struct Tarball {
    pub addr: Address,
    pub inputs: ImageInputs,
    pub file: PathBuf,
    /// Its sha256 (fetched) or its recipe's fingerprint (built).
    pub source: Option<String>,
    /// Its sha256 when fetched by URL.
    pub sha256: Option<String>,
}

pub fn tarball(
    spec: &FleetSpec,
    layout: &Layout,
    recipes: &BTreeMap<String, String>,
    img_name: &str,
    arch: Arch,
) -> Tarball {
    let img = spec.images.iter().find(|i| i.name.value == *img_name);
    let addr = Address::Image { name: img_name.to_string(), arch: arch.as_str().to_string() };
    match img.and_then(|i| i.urls.get(&arch)) {
        Some(u) => {
            let file = layout.cache_dir.join("images/fetched").join(format!("{}.tar.gz", u.sha256));
            let inputs = ImageInputs::Url {
                name: img_name.to_string(),
                arch: arch.as_str().into(),
                url: u.url.clone(),
                sha256: u.sha256.clone(),
                file: file.clone(),
            };
            Tarball { addr, inputs, file, source: Some(u.sha256.clone()), sha256: Some(u.sha256.clone()) }
        }
        None => {
            let recipe = img.and_then(|i| i.recipe.as_ref()).map(|r| r.value.clone()).unwrap_or_default();
            let fingerprint = recipes.get(img_name).cloned();
            let stem = format!("{img_name}-{}", arch.as_str());
            let file = layout.cache_dir.join("images/out").join(&stem).join(format!("{stem}.tar.gz"));
            let inputs = ImageInputs::Recipe {
                name: img_name.to_string(),
                arch: arch.as_str().into(),
                recipe,
                recipe_fingerprint: fingerprint.clone(),
                file: file.clone(),
            };
            Tarball { addr, inputs, file, source: fingerprint, sha256: None }
        }
    }
}

/// The image and import resources for `g`'s image on `host` (added once per host).
pub fn add(
    spec: &FleetSpec,
    layout: &Layout,
    recipes: &BTreeMap<String, String>,
    g: &Gateway,
    host: &Host,
    out: &mut Desired,
) -> Option<ImageUse> {
    let img_name = &g.image.as_ref()?.value;
    let arch = host.arch;
    let Tarball { addr: image_addr, inputs, file, source, .. } = tarball(spec, layout, recipes, img_name, arch);
    let import_addr = Address::Import { image: img_name.clone(), host: host.name.value.clone() };
    let store = (host.runtime == Runtime::Process).then(|| layout.image_store(&host.name.value, img_name));
    let import = ImportInputs {
        image: image_addr.to_string(),
        file,
        alias: img_name.clone(),
        remote: host.remote_name().map(str::to_string),
        incus_config: host.is_remote().then(|| host.incus_config.clone().unwrap_or_else(|| layout.incus_config_dir())),
        source: source.clone(),
        store: store.clone(),
        fleet: spec.name.clone(),
    };
    if !out.contains_key(&image_addr.to_string()) {
        put(out, Resource::new(image_addr.clone(), &inputs, vec![]));
    }
    if !out.contains_key(&import_addr.to_string()) {
        // On another machine: imported there once its host is reachable and enrolled.
        let mut deps = vec![image_addr];
        deps.extend(host.is_remote().then(|| Address::Host(host.name.value.clone())));
        put(out, Resource::new(import_addr.clone(), &import, deps));
    }
    Some(ImageUse { import: import_addr, source, root: store.map(|s| s.join("rootfs")) })
}

/// The sandbox images gateway `g`'s agents run their tools from (`image.<name>[<arch>]` each, added
/// once), for its launch; the addresses it waits for.
pub fn sandboxes(
    spec: &FleetSpec,
    layout: &Layout,
    recipes: &BTreeMap<String, String>,
    g: &Gateway,
    host: &Host,
    out: &mut Desired,
) -> (Vec<crate::runtime::sandbox::SandboxImage>, Vec<Address>) {
    let mut names: Vec<String> = spec
        .agents
        .iter()
        .filter(|a| a.gateway.value == g.name.value)
        .filter_map(|a| crate::fleetfile::AgentSandbox::of(g, a))
        .map(|s| s.image)
        .collect();
    names.sort();
    names.dedup();
    let mut images = Vec::new();
    let mut deps = Vec::new();
    for name in names {
        let t = tarball(spec, layout, recipes, &name, host.arch);
        if !out.contains_key(&t.addr.to_string()) {
            put(out, Resource::new(t.addr.clone(), &t.inputs, vec![]));
        }
        images.push(crate::runtime::sandbox::SandboxImage { name, file: t.file, sha256: t.sha256, source: t.source });
        deps.push(t.addr);
    }
    (images, deps)
}
