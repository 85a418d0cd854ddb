//! Who is asking: the admin (the token apply minted at `serve/token`, or a session cookie the
//! status page's sign-in opened, `sessions`), one agent (its own token, from its env file), or a sender of trace
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

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The daemon's proof that it holds the admin token (issue 24): an HMAC of the CLI's nonce, bound
/// to the fleet and the port the CLI dialled, so neither an impostor on the port nor a relay to a
/// daemon elsewhere can answer it. The CLI sends the token only after checking it.
pub fn proof(admin_token: &str, fleet: &str, port: u16, nonce: &str) -> String {
    hex::encode(proof_bytes(admin_token, fleet, port, nonce))
}

fn proof_bytes(admin_token: &str, fleet: &str, port: u16, nonce: &str) -> Hash {
    hmac_sha256(admin_token.as_bytes(), format!("fleet-serve-proof\n{fleet}\n{port}\n{nonce}").as_bytes())
}

/// Whether `answer` (a daemon's `/v1/prove` answer to `nonce`) proves it holds `token`.
pub fn proved(answer: &serde_json::Value, token: &str, fleet: &str, port: u16, nonce: &str) -> bool {
    let mut got = [0u8; 32];
    answer["proof"].as_str().is_some_and(|p| hex::decode_to_slice(p, &mut got).is_ok())
        && ct_eq(&got, &proof_bytes(token, fleet, port, nonce))
}

#[derive(Default, Clone)]
pub struct Tokens {
    admin: Option<Hash>,
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

    /// The admin token's hash (a change ends every session).
    pub fn admin_hash(&self) -> Option<Hash> {
        self.admin
    }

    /// Whether `token` is the admin token (the sign-in form).
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
    fn hmac_is_rfc_4231_and_the_proof_binds_fleet_port_and_nonce() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let p = proof("admin-secret", "f", 8700, "n1");
        assert_eq!(p, proof("admin-secret", "f", 8700, "n1"));
        for other in [
            proof("other", "f", 8700, "n1"),
            proof("admin-secret", "g", 8700, "n1"),
            proof("admin-secret", "f", 8701, "n1"),
            proof("admin-secret", "f", 8700, "n2"),
        ] {
            assert_ne!(p, other);
        }
        assert!(!p.contains("admin-secret"));
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
