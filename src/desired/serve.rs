//! `serve { … }` → resources: the daemon's admin token, the daemon (`serve`), and one token per
//! agent in its env file. The only I/O: what fleet's own binary is (a new build restarts the
//! daemon).

use crate::fleetfile::FleetSpec;
use crate::layout::Layout;
use crate::litellm::resources::SecretInputs;
use crate::resource::{add as put, Address, Desired, Resource};
use crate::serve::agent_token::AgentTokenInputs;
use crate::serve::process::{exe_id, ServeInputs};

pub fn add(spec: &FleetSpec, layout: &Layout, out: &mut Desired) {
    let Some(sv) = &spec.serve else { return };
    let token = SecretInputs { file: layout.serve_token(), prefix: "fleet-admin-".into() };
    put(out, Resource::new(Address::ServeAdminToken, &token, vec![]));
    let exe = std::env::current_exe().unwrap_or_else(|_| "fleet".into());
    let inputs = ServeInputs {
        exe_id: exe_id(&exe),
        exe,
        fleet: spec.name.clone(),
        data_dir: layout.data_dir.clone(),
        bind: sv.bind.clone(),
        port: sv.port,
        reply_timeout_s: sv.reply_timeout_s,
        log: layout.serve_dir().join("serve.log"),
        pid_file: layout.serve_dir().join("serve.pid"),
        export: sv.export.as_ref().map(|e| crate::serve::process::ExportInputs {
            url: e.otlp.clone(),
            headers: e.headers.as_ref().map(|h| h.to_string()),
            capture_content: e.capture_content,
            project: e.project.clone(),
        }),
    };
    put(out, Resource::new(Address::Serve, &inputs, vec![Address::ServeAdminToken]));
    for a in &spec.agents {
        let name = &a.name.value;
        let t = AgentTokenInputs { agent: name.clone(), env_file: layout.agent_env(name), url: sv.url() };
        put(out, Resource::new(Address::AgentToken(name.clone()), &t, vec![Address::Key(name.clone())]));
    }
}
