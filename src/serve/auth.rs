//! Who is asking: the admin (the token apply minted at `serve/token`, or the session cookie the
//! status page's login sets), one agent (its own token, from its env file), or a sender of trace
//! events only: the proxy's callback (its callback token) or a gateway (its own gateway token, for
//! its own agents). Only hashes are held; every comparison is constant time. Pure.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Agent(String),
    /// The LiteLLM proxy's callback: posts `llm_call` events of any agent, reads nothing.
    Callback,
    /// A gateway's plugin: posts trace events of the gateway's agents, reads nothing.
    Gateway(String),
}

impl Principal {
    /// Whether this principal may read and write `agent`'s conversations and read its trace.
    pub fn may_touch(&self, agent: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Agent(a) => a == agent,
            Principal::Callback | Principal::Gateway(_) => false,
        }
    }
}

pub type Hash = [u8; 32];

pub fn hash(token: &str) -> Hash {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in time independent of where the bytes differ.
pub fn ct_eq(a: &Hash, b: &Hash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub const COOKIE: &str = "fleet_session";

/// The session cookie's value for an admin token: derived from it (never the token itself), so it
/// survives a daemon restart and dies with the token.
pub fn session_value(admin_token: &str) -> String {
    hex::encode(Sha256::digest(format!("fleet-session\0{admin_token}").as_bytes()))
}

#[derive(Default, Clone)]
pub struct Tokens {
    admin: Option<Hash>,
    session: Option<Hash>,
    /// Token hash (hex, as state records it) → agent.
    agents: BTreeMap<String, String>,
    /// Token hash (hex) → the callback or a gateway.
    services: BTreeMap<String, Principal>,
}

impl Tokens {
    /// `agents`: agent → token hash; `services`: token hash → the callback or a gateway.
    pub fn new(
        admin_token: Option<&str>,
        agents: BTreeMap<String, String>,
        services: BTreeMap<String, Principal>,
    ) -> Self {
        Tokens {
            admin: admin_token.map(hash),
            session: admin_token.map(|t| hash(&session_value(t))),
            agents: agents.into_iter().map(|(agent, h)| (h, agent)).collect(),
            services,
        }
    }

    /// The principal a bearer token stands for.
    pub fn bearer(&self, token: &str) -> Option<Principal> {
        let h = hash(token);
        if self.admin.as_ref().is_some_and(|a| ct_eq(a, &h)) {
            return Some(Principal::Admin);
        }
        let mut found = None;
        for (hex_hash, agent) in &self.agents {
            let mut stored = [0u8; 32];
            if hex::decode_to_slice(hex_hash, &mut stored).is_ok() && ct_eq(&stored, &h) {
                found = Some(Principal::Agent(agent.clone()));
            }
        }
        for (hex_hash, who) in &self.services {
            let mut stored = [0u8; 32];
            if hex::decode_to_slice(hex_hash, &mut stored).is_ok() && ct_eq(&stored, &h) {
                found = found.or_else(|| Some(who.clone()));
            }
        }
        found
    }

    /// The principal a session cookie stands for (the admin's, or nobody).
    pub fn cookie(&self, value: &str) -> Option<Principal> {
        self.session.as_ref().filter(|s| ct_eq(s, &hash(value))).map(|_| Principal::Admin)
    }

    /// Whether `token` is the admin token (the login link).
    pub fn is_admin(&self, token: &str) -> bool {
        self.admin.as_ref().is_some_and(|a| ct_eq(a, &hash(token)))
    }
}

/// The token in `Authorization: Bearer …`.
pub fn bearer_of(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// The session cookie's value in a `Cookie:` header.
pub fn cookie_of(header: Option<&str>) -> Option<&str> {
    header?.split(';').find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let agents = [("alice".to_string(), hex::encode(hash("fa-alice")))].into();
        let services = [
            (hex::encode(hash("cb-secret")), Principal::Callback),
            (hex::encode(hash("gw-secret")), Principal::Gateway("main".into())),
        ]
        .into();
        Tokens::new(Some("admin-secret"), agents, services)
    }

    #[test]
    fn tokens_name_their_principal_and_nothing_else() {
        let t = tokens();
        assert_eq!(t.bearer("admin-secret"), Some(Principal::Admin));
        assert_eq!(t.bearer("fa-alice"), Some(Principal::Agent("alice".into())));
        assert_eq!(t.bearer("fa-bob"), None);
        assert_eq!(t.bearer("cb-secret"), Some(Principal::Callback));
        assert_eq!(t.bearer("gw-secret"), Some(Principal::Gateway("main".into())));
        assert!(!Principal::Callback.may_touch("alice") && !Principal::Gateway("main".into()).may_touch("alice"));
        assert_eq!(t.bearer(""), None);
        assert!(Principal::Agent("alice".into()).may_touch("alice"));
        assert!(!Principal::Agent("alice".into()).may_touch("bob"));
        assert!(Principal::Admin.may_touch("bob"));
    }

    #[test]
    fn the_session_cookie_is_derived_and_is_not_the_token() {
        let t = tokens();
        let v = session_value("admin-secret");
        assert_ne!(v, "admin-secret");
        assert_eq!(t.cookie(&v), Some(Principal::Admin));
        assert_eq!(t.cookie("admin-secret"), None, "the raw token is no cookie");
        assert_eq!(t.bearer(&v), None, "the cookie is no bearer token");
    }

    #[test]
    fn headers_are_read_strictly() {
        assert_eq!(bearer_of(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_of(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_of(Some("Basic abc")), None);
        assert_eq!(bearer_of(Some("Bearer ")), None);
        assert_eq!(cookie_of(Some("a=1; fleet_session=xyz; b=2")), Some("xyz"));
        assert_eq!(cookie_of(Some("fleet_sessionx=1")), None);
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(&hash("a"), &hash("a")));
        assert!(!ct_eq(&hash("a"), &hash("b")));
    }
}
