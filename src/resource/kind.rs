//! What sort of thing a resource is: one driver per kind.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    LitellmConfig,
    LitellmInstall,
    LitellmProxy,
    Key,
    Toolchain,
    Gateway,
    Agent,
    GatewayModels,
    Wake,
    Image,
    Import,
    Serve,
    AgentToken,
    Host,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::LitellmConfig => "litellm.config",
            Kind::LitellmInstall => "litellm.install",
            Kind::LitellmProxy => "litellm.proxy",
            Kind::Key => "key",
            Kind::Toolchain => "openclaw.toolchain",
            Kind::Gateway => "gateway",
            Kind::Agent => "agent",
            Kind::GatewayModels => "gateway.models",
            Kind::Wake => "wake",
            Kind::Image => "image",
            Kind::Import => "import",
            Kind::Serve => "serve",
            Kind::AgentToken => "serve.token",
            Kind::Host => "host",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Kind::Secret,
            Kind::LitellmConfig,
            Kind::LitellmInstall,
            Kind::LitellmProxy,
            Kind::Key,
            Kind::Toolchain,
            Kind::Gateway,
            Kind::Agent,
            Kind::GatewayModels,
            Kind::Wake,
            Kind::Image,
            Kind::Import,
            Kind::Serve,
            Kind::AgentToken,
            Kind::Host,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}
