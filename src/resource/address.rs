//! Resource addresses: `key.alice`, `gateway.main.models`, `image.openclaw-base[amd64]`,
//! `import.openclaw-base@box`… One type, printed and parsed in one place, so the desired
//! side, the CLI, state and the lifecycle work all agree on them.

use std::fmt;
use std::str::FromStr;

use super::kind::Kind;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// `litellm.master-key`: the proxy's admin key, minted into a file.
    MasterKey,
    /// `litellm.callback-token`: the token the proxy's callback sends.
    CallbackToken,
    /// `litellm.config`
    LitellmConfig,
    /// `litellm.install`
    LitellmInstall,
    /// `litellm.proxy`
    LitellmProxy,
    /// `openclaw.toolchain`
    Toolchain,
    /// `key.<agent>`
    Key(String),
    /// `gateway.<gateway>`
    Gateway(String),
    /// `gateway.<gateway>.token`
    GatewayToken(String),
    /// `gateway.<gateway>.models`
    GatewayModels(String),
    /// `agent.<agent>`
    Agent(String),
    /// `wake.<agent>`
    Wake(String),
    /// `image.<image>[<arch>]`
    Image { name: String, arch: String },
    /// `import.<image>@<host>`
    Import { image: String, host: String },
    /// `serve`: the daemon (`fleet serve`) as a process apply runs.
    Serve,
    /// `serve.admin-token`: the daemon's admin token, minted into a file.
    ServeAdminToken,
    /// `serve.token.<agent>`: the agent's own token for the daemon, in its env file.
    AgentToken(String),
    /// `host.<host>`: another machine's incusd, enrolled (trust token), pinned and reachable.
    Host(String),
}

impl Address {
    pub fn kind(&self) -> Kind {
        match self {
            Address::MasterKey | Address::CallbackToken | Address::GatewayToken(_) | Address::ServeAdminToken => {
                Kind::Secret
            }
            Address::LitellmConfig => Kind::LitellmConfig,
            Address::LitellmInstall => Kind::LitellmInstall,
            Address::LitellmProxy => Kind::LitellmProxy,
            Address::Toolchain => Kind::Toolchain,
            Address::Key(_) => Kind::Key,
            Address::Gateway(_) => Kind::Gateway,
            Address::GatewayModels(_) => Kind::GatewayModels,
            Address::Agent(_) => Kind::Agent,
            Address::Wake(_) => Kind::Wake,
            Address::Image { .. } => Kind::Image,
            Address::Import { .. } => Kind::Import,
            Address::Serve => Kind::Serve,
            Address::AgentToken(_) => Kind::AgentToken,
            Address::Host(_) => Kind::Host,
        }
    }

    /// The agent this address belongs to (`key.alice`, `agent.alice`, `wake.alice`).
    pub fn agent(&self) -> Option<&str> {
        match self {
            Address::Key(a) | Address::Agent(a) | Address::Wake(a) | Address::AgentToken(a) => Some(a),
            _ => None,
        }
    }

    /// The gateway this address belongs to (`gateway.main`, `gateway.main.token`, `gateway.main.models`).
    pub fn gateway(&self) -> Option<&str> {
        match self {
            Address::Gateway(g) | Address::GatewayToken(g) | Address::GatewayModels(g) => Some(g),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::MasterKey => f.write_str("litellm.master-key"),
            Address::CallbackToken => f.write_str("litellm.callback-token"),
            Address::LitellmConfig => f.write_str("litellm.config"),
            Address::LitellmInstall => f.write_str("litellm.install"),
            Address::LitellmProxy => f.write_str("litellm.proxy"),
            Address::Toolchain => f.write_str("openclaw.toolchain"),
            Address::Key(a) => write!(f, "key.{a}"),
            Address::Gateway(g) => write!(f, "gateway.{g}"),
            Address::GatewayToken(g) => write!(f, "gateway.{g}.token"),
            Address::GatewayModels(g) => write!(f, "gateway.{g}.models"),
            Address::Agent(a) => write!(f, "agent.{a}"),
            Address::Wake(a) => write!(f, "wake.{a}"),
            Address::Image { name, arch } => write!(f, "image.{name}[{arch}]"),
            Address::Import { image, host } => write!(f, "import.{image}@{host}"),
            Address::Serve => f.write_str("serve"),
            Address::ServeAdminToken => f.write_str("serve.admin-token"),
            Address::AgentToken(a) => write!(f, "serve.token.{a}"),
            Address::Host(h) => write!(f, "host.{h}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a resource address (e.g. key.alice, agent.alice, gateway.main, gateway.main.models, litellm.proxy, image.openclaw-base[amd64], import.openclaw-base@local, host.edge)")]
pub struct BadAddress(pub String);

/// A fleet-file name: lowercase letters, digits, `-`, `_` (the fleet file checks the rest).
fn name(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| s.to_string())
}

impl FromStr for Address {
    type Err = BadAddress;

    fn from_str(s: &str) -> Result<Self, BadAddress> {
        let bad = || BadAddress(s.to_string());
        let fixed = match s {
            "litellm.master-key" => Some(Address::MasterKey),
            "litellm.callback-token" => Some(Address::CallbackToken),
            "litellm.config" => Some(Address::LitellmConfig),
            "litellm.install" => Some(Address::LitellmInstall),
            "litellm.proxy" => Some(Address::LitellmProxy),
            "openclaw.toolchain" => Some(Address::Toolchain),
            "serve" => Some(Address::Serve),
            "serve.admin-token" => Some(Address::ServeAdminToken),
            _ => None,
        };
        if let Some(a) = fixed {
            return Ok(a);
        }
        let (head, rest) = s.split_once('.').ok_or_else(bad)?;
        let named = |f: fn(String) -> Address| name(rest).map(f).ok_or_else(bad);
        match head {
            "key" => named(Address::Key),
            "agent" => named(Address::Agent),
            "wake" => named(Address::Wake),
            "host" => named(Address::Host),
            "serve" => rest.strip_prefix("token.").and_then(name).map(Address::AgentToken).ok_or_else(bad),
            "gateway" => match rest.split_once('.') {
                None => named(Address::Gateway),
                Some((g, "token")) => name(g).map(Address::GatewayToken).ok_or_else(bad),
                Some((g, "models")) => name(g).map(Address::GatewayModels).ok_or_else(bad),
                Some(_) => Err(bad()),
            },
            "image" => {
                let (n, arch) = rest.strip_suffix(']').and_then(|r| r.split_once('[')).ok_or_else(bad)?;
                Ok(Address::Image { name: name(n).ok_or_else(bad)?, arch: name(arch).ok_or_else(bad)? })
            }
            "import" => {
                let (image, host) = rest.split_once('@').ok_or_else(bad)?;
                Ok(Address::Import { image: name(image).ok_or_else(bad)?, host: name(host).ok_or_else(bad)? })
            }
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_prints_and_parses_back() {
        let all = [
            Address::MasterKey,
            Address::CallbackToken,
            Address::LitellmConfig,
            Address::LitellmInstall,
            Address::LitellmProxy,
            Address::Toolchain,
            Address::Serve,
            Address::ServeAdminToken,
            Address::AgentToken("alice".into()),
            Address::Host("edge".into()),
            Address::Key("alice".into()),
            Address::Gateway("main".into()),
            Address::GatewayToken("main".into()),
            Address::GatewayModels("main".into()),
            Address::Agent("agent-0001".into()),
            Address::Wake("bob_2".into()),
            Address::Image { name: "openclaw-base".into(), arch: "amd64".into() },
            Address::Import { image: "openclaw-base".into(), host: "box".into() },
        ];
        for a in all {
            let text = a.to_string();
            assert_eq!(text.parse::<Address>(), Ok(a.clone()), "{text}");
        }
        assert_eq!(Address::GatewayModels("main".into()).to_string(), "gateway.main.models");
        assert_eq!(
            Address::Image { name: "x".into(), arch: "arm64".into() }.to_string(),
            "image.x[arm64]",
            "the arch in brackets"
        );
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for s in [
            "",
            "key",
            "key.",
            "agent.a.b",
            "gateway.main.other",
            "image.x",
            "image.x[amd64",
            "import.x",
            "foo.bar",
            "key.Al ice",
        ] {
            assert!(s.parse::<Address>().is_err(), "{s:?} parsed");
        }
    }
}
