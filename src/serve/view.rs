//! What the daemon knows of the fleet: read from `state.db` (read-only; apply's lock never blocks
//! it), reloaded as the state changes. Agents with their gateway and model, the gateways, the
//! agents' token hashes, the last runs. It never parses the fleet file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::openclaw::client::GatewayRef;
use crate::openclaw::gateway::GatewayInputs;
use crate::openclaw::models::ModelsInputs;
use crate::state::{Record, RunRow, Store};

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub name: String,
    pub gateway: String,
    pub model: String,
    /// `30m`, as OpenClaw takes it; None: no heartbeat.
    pub heartbeat: Option<String>,
    /// Whether apply sent it its first (wake) message.
    pub woken: bool,
    /// How the daemon reaches its gateway (the same reference apply used).
    #[serde(skip)]
    pub gref: GatewayRef,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayView {
    pub name: String,
    /// Where it runs: `local` (a process of this machine), `local incus`, or the remote it is on.
    pub host: String,
    /// On a cluster: the member its last start landed on.
    pub member: Option<String>,
    pub version: String,
    #[serde(skip)]
    pub gref: GatewayRef,
}

impl FleetView {
    /// The gateways grouped by where they run: hosts in name order, this machine first.
    pub fn gateways_by_host(&self) -> Vec<(String, Vec<&GatewayView>)> {
        let mut groups: BTreeMap<(bool, String), Vec<&GatewayView>> = BTreeMap::new();
        for g in self.gateways.values() {
            groups.entry((!g.host.starts_with("local"), g.host.clone())).or_default().push(g);
        }
        groups.into_iter().map(|((_, host), gws)| (host, gws)).collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct FleetView {
    pub agents: BTreeMap<String, AgentView>,
    pub gateways: BTreeMap<String, GatewayView>,
    /// Agent → the sha256 (hex) of its daemon token.
    pub agent_tokens: BTreeMap<String, String>,
    /// The sha256 (hex) of the proxy's callback token.
    pub callback_token: Option<String>,
    /// Gateway → the sha256 (hex) of its own token (its plugin posts trace events with it).
    pub gateway_tokens: BTreeMap<String, String>,
    /// `trace { otlp … }`, as the `serve` record holds it.
    pub export: Option<crate::serve::process::ExportInputs>,
    pub runs: Vec<RunRow>,
}

impl FleetView {
    /// Reads the state database (an absent one is an empty fleet).
    pub fn load(state_db: &Path) -> miette::Result<FleetView> {
        let Some(store) = Store::open_existing_readonly(state_db).map_err(|e| miette::miette!("{e}"))? else {
            return Ok(FleetView::default());
        };
        let records = store.load().map_err(|e| miette::miette!("{e}"))?;
        let runs = store.runs(10).map_err(|e| miette::miette!("{e}"))?;
        Ok(FleetView { runs, ..FleetView::from_records(records.values()) })
    }

    /// The view of a set of records (pending ones, intents only, are left out).
    pub fn from_records<'a>(records: impl Iterator<Item = &'a Record>) -> FleetView {
        let mut v = FleetView::default();
        let records: Vec<&Record> = records.filter(|r| !r.is_pending()).collect();
        let woken: Vec<&str> =
            records.iter().filter(|r| r.kind == "wake").filter_map(|r| r.address.strip_prefix("wake.")).collect();
        for r in &records {
            match r.kind.as_str() {
                "gateway.models" => {
                    let Ok(m) = r.inputs_as::<ModelsInputs>() else { continue };
                    for (id, a) in &m.agents {
                        v.agents.insert(
                            id.clone(),
                            AgentView {
                                name: id.clone(),
                                gateway: m.gateway.name.clone(),
                                model: a.primary.clone(),
                                heartbeat: a.heartbeat.clone(),
                                woken: woken.contains(&id.as_str()),
                                gref: m.gateway.clone(),
                            },
                        );
                    }
                }
                "gateway" => {
                    let Ok(g) = r.inputs_as::<GatewayInputs>() else { continue };
                    let host = match &g.launch.container {
                        Some(c) => c.remote.clone().unwrap_or_else(|| "local incus".into()),
                        None => "local".into(),
                    };
                    let member = r.outputs.pointer("/handle/member").and_then(|m| m.as_str()).map(str::to_string);
                    let url = r.outputs.get("url").and_then(|u| u.as_str()).unwrap_or_default().to_string();
                    let name = g.launch.gateway.clone();
                    v.gateways.insert(
                        name.clone(),
                        GatewayView {
                            name: name.clone(),
                            host,
                            member,
                            version: r.outputs["version"].as_str().unwrap_or_default().to_string(),
                            gref: GatewayRef { name, url, token_file: g.token_file.clone() },
                        },
                    );
                }
                "secret" => {
                    let h = r.outputs.get("sha256").and_then(|h| h.as_str()).map(str::to_string);
                    if r.address == "litellm.callback-token" {
                        v.callback_token = h;
                    } else if let Some(g) = r.address.strip_prefix("gateway.").and_then(|a| a.strip_suffix(".token")) {
                        v.gateway_tokens.extend(h.map(|h| (g.to_string(), h)));
                    }
                }
                "serve" => {
                    v.export = r.inputs_as::<crate::serve::process::ServeInputs>().ok().and_then(|s| s.export);
                }
                "serve.token" => {
                    let agent = r.address.strip_prefix("serve.token.").unwrap_or_default();
                    if let Some(h) = r.outputs.get("sha256").and_then(|h| h.as_str()) {
                        v.agent_tokens.insert(agent.to_string(), h.to_string());
                    }
                }
                _ => {}
            }
        }
        // An agent whose models step has not run yet has no entry: it is not routable.
        v
    }

    /// The names of a gateway's agents.
    pub fn agents_of(&self, gateway: &str) -> Vec<String> {
        self.agents.values().filter(|a| a.gateway == gateway).map(|a| a.name.clone()).collect()
    }

    /// The daemon's tokens: admin (given), agents', the callback's and the gateways'.
    pub fn tokens(&self, admin: Option<&str>) -> crate::serve::auth::Tokens {
        use crate::serve::auth::Principal;
        let mut services: BTreeMap<String, Principal> =
            self.gateway_tokens.iter().map(|(g, h)| (h.clone(), Principal::Gateway(g.clone()))).collect();
        services.extend(self.callback_token.clone().map(|h| (h, Principal::Callback)));
        crate::serve::auth::Tokens::new(admin, self.agent_tokens.clone(), services)
    }
}
