//! The status page's sign-in (issue 24): sessions that are random, held by the daemon, expiring
//! and revocable, and one-time login codes. A session is 32 random bytes the browser holds as its
//! cookie; the daemon keeps only their sha256, so a copy of its memory logs no one in. A login code
//! is what `fleet status --login` asks the daemon for (with the admin token) and prints as a link:
//! good once, for two minutes — the admin token itself never goes into a URL. Pure: the caller says
//! what time it is.

use std::collections::HashMap;

use super::auth::{ct_eq, hash, Hash};

/// How long a session lasts from sign-in (no sliding: sign in again after).
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// How long a login code stays good.
pub const CODE_TTL_MS: i64 = 120 * 1000;
/// At most this many sessions (and codes): the oldest goes first, so no caller fills memory.
const MAX_LIVE: usize = 64;

/// Secrets each good until a moment, kept as hashes.
#[derive(Default)]
struct Expiring {
    /// hash → expires at (ms)
    live: HashMap<Hash, i64>,
}

impl Expiring {
    fn mint(&mut self, now: i64, ttl: i64) -> String {
        self.live.retain(|_, exp| *exp > now);
        while self.live.len() >= MAX_LIVE {
            let Some(oldest) = self.live.iter().min_by_key(|(_, exp)| **exp).map(|(h, _)| *h) else { break };
            self.live.remove(&oldest);
        }
        let secret = crate::fsutil::random_hex(32);
        self.live.insert(hash(&secret), now + ttl);
        secret
    }

    /// The stored hash equal to `secret`'s, if it is still good (compared in constant time).
    fn find(&self, secret: &str, now: i64) -> Option<Hash> {
        let h = hash(secret);
        let mut found = None;
        for (k, exp) in &self.live {
            if ct_eq(k, &h) && *exp > now {
                found = Some(*k);
            }
        }
        found
    }
}

/// The daemon's sessions and login codes.
#[derive(Default)]
pub struct Sessions {
    sessions: Expiring,
    codes: Expiring,
}

impl Sessions {
    /// A new session: the cookie's value.
    pub fn open(&mut self, now: i64) -> String {
        self.sessions.mint(now, SESSION_TTL_MS)
    }

    /// Whether a cookie's value is a live session.
    pub fn is_live(&self, value: &str, now: i64) -> bool {
        self.sessions.find(value, now).is_some()
    }

    /// Signs a session out (nothing if it is not one).
    pub fn close(&mut self, value: &str, now: i64) {
        if let Some(h) = self.sessions.find(value, now) {
            self.sessions.live.remove(&h);
        }
    }

    /// Every session and code ends: the admin token changed.
    pub fn close_all(&mut self) {
        self.sessions.live.clear();
        self.codes.live.clear();
    }

    /// A one-time login code.
    pub fn mint_code(&mut self, now: i64) -> String {
        self.codes.mint(now, CODE_TTL_MS)
    }

    /// Spends a login code: true once, while it is good.
    pub fn redeem(&mut self, code: &str, now: i64) -> bool {
        match self.codes.find(code, now) {
            Some(h) => self.codes.live.remove(&h).is_some(),
            None => false,
        }
    }
}

/// The `Set-Cookie` value of a session: HttpOnly, SameSite=Strict, for its lifetime; `Secure` when
/// the daemon listens beyond loopback (a browser then sends it only over HTTPS: put TLS in front).
pub fn cookie(value: &str, secure: bool) -> String {
    format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        super::auth::COOKIE,
        SESSION_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie(secure: bool) -> String {
    format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        super::auth::COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_random_expires_and_signs_out() {
        let mut s = Sessions::default();
        let a = s.open(0);
        let b = s.open(0);
        assert_ne!(a, b, "random, not derived from the token");
        assert_eq!(a.len(), 64);
        assert!(s.is_live(&a, 1) && s.is_live(&b, 1));
        assert!(!s.is_live("nope", 1));
        assert!(!s.is_live(&a, SESSION_TTL_MS), "expired");
        s.close(&a, 2);
        assert!(!s.is_live(&a, 3) && s.is_live(&b, 3), "sign-out ends that session only");
        s.close_all();
        assert!(!s.is_live(&b, 3));
    }

    #[test]
    fn a_login_code_is_good_once_and_briefly() {
        let mut s = Sessions::default();
        let c = s.mint_code(0);
        assert!(!s.redeem("x", 1));
        assert!(s.redeem(&c, 1));
        assert!(!s.redeem(&c, 2), "once");
        let late = s.mint_code(0);
        assert!(!s.redeem(&late, CODE_TTL_MS), "expired");
    }

    #[test]
    fn sessions_are_capped_oldest_first() {
        let mut s = Sessions::default();
        let first = s.open(0);
        let rest: Vec<String> = (1..=MAX_LIVE as i64).map(|t| s.open(t)).collect();
        assert!(!s.is_live(&first, MAX_LIVE as i64 + 1), "the oldest made room");
        assert!(rest.iter().all(|r| s.is_live(r, MAX_LIVE as i64 + 1)));
    }

    #[test]
    fn the_cookie_is_secure_beyond_loopback() {
        assert_eq!(cookie("v", false), "fleet_session=v; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
        assert!(cookie("v", true).ends_with("; Secure"));
        assert!(cleared_cookie(false).contains("Max-Age=0"));
    }
}
