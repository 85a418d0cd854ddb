//! A certificate fleet mints for a server it will pin: EC P-256, self-signed, the address fleet
//! dials as its subject alternative name, valid for `days` from an hour ago (clocks drift).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::pin::Pin;

/// A freshly minted certificate and its key (PEM). The key is a secret: never printed, never in
/// state; it goes into the server's home (mode 0600) and nowhere else.
pub struct Minted {
    pub cert_pem: String,
    pub(super) key_pem: String,
    pub pin: Pin,
    /// When it stops being valid, in seconds since the epoch.
    pub not_after: i64,
}

impl Minted {
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Minted {{ pin: {}, not_after: {}, key: <secret> }}", self.pin, self.not_after)
    }
}

pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Mints a certificate for `address` (an IP address or a DNS name), valid `days` days.
pub fn mint(address: &str, days: u32) -> Result<Minted, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![address.to_string()]).map_err(|e| e.to_string())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "fleet gateway");
    params.distinguished_name = dn;
    let now = now_s();
    let not_after = now + i64::from(days) * 86_400;
    let at = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| e.to_string());
    params.not_before = at(now - 3600)?;
    params.not_after = at(not_after)?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(Minted { pin: Pin::of_der(cert.der()), cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_certificate_names_the_address_and_is_pinned_by_its_der() {
        let m = mint("10.213.21.2", 3650).unwrap();
        assert_eq!(Pin::of_pem(m.cert_pem.as_bytes()), Some(m.pin), "the pin is the sha256 of the leaf's DER");
        assert!(m.key_pem().contains("PRIVATE KEY"));
        assert!(!format!("{m:?}").contains("PRIVATE"), "the key is never in a debug print");
        assert!((m.not_after - now_s() - 3650 * 86_400).abs() < 5);
        // Its subject alternative name is the IP address (as an IP, not a DNS name).
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(m.cert_pem.as_bytes()).unwrap();
        let ip = [10u8, 213, 21, 2];
        assert!(der.as_ref().windows(6).any(|w| w == [0x87, 4, ip[0], ip[1], ip[2], ip[3]]), "an iPAddress SAN");
        assert_ne!(mint("10.213.21.2", 1).unwrap().pin, m.pin, "each mint is a new key and certificate");
    }
}
