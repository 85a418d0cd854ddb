//! A pin (sha256 of a leaf certificate's DER) and the rustls client configs that accept only the
//! server presenting that certificate. Signatures stay checked (the server proves it holds the
//! key); names and chains are not (the certificates are self-signed, and what fleet dials is an
//! address it chose). TLS 1.3 only: OpenClaw's gateway and Incus serve nothing older.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The sha256 of a certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    pub fn of_der(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }

    /// The pin of the first certificate of a PEM text; None when it holds none.
    pub fn of_pem(pem: &[u8]) -> Option<Pin> {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        Some(Pin::of_der(&der))
    }

    /// 64 hex digits, or 32 colon-separated pairs, with an optional `sha256:` prefix, any case
    /// (the forms OpenClaw and Incus print).
    pub fn parse(s: &str) -> Option<Pin> {
        let s = s.trim();
        let s = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:")).unwrap_or(s);
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(hex).ok()?;
        Some(Pin(bytes.try_into().ok()?))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({})", self.hex())
    }
}

/// What a handshake refused by the pin presented: kept by the verifier so the caller can say it
/// (rustls only carries a string back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    pub pinned: Pin,
    pub presented: Pin,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "it presents a TLS certificate with sha256 {}, which does not match the pinned sha256 {}",
            self.presented, self.pinned
        )
    }
}

/// Accepts the one certificate whose sha256 is `pin`; records what else was presented.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
    mismatch: Mutex<Option<PinMismatch>>,
}

impl PinVerifier {
    pub fn new(pin: Pin) -> Arc<PinVerifier> {
        Arc::new(PinVerifier { pin, provider: provider(), mismatch: Mutex::new(None) })
    }

    /// The certificate a refused handshake presented (None: it was not refused for its pin).
    pub fn mismatch(&self) -> Option<PinMismatch> {
        self.mismatch.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Pin::of_der(end_entity.as_ref());
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let m = PinMismatch { pinned: self.pin, presented };
        let why = m.to_string();
        *self.mismatch.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        Err(rustls::Error::General(why))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder(verifier: Arc<PinVerifier>) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
}

/// A client config that talks only to the server presenting the pinned certificate.
pub fn client_config(verifier: Arc<PinVerifier>) -> ClientConfig {
    builder(verifier).with_no_client_auth()
}

/// The same, presenting a client certificate (PEM certificate and key: fleet's Incus identity).
pub fn client_config_with_identity(
    verifier: Arc<PinVerifier>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("client key: {e}"))?;
    builder(verifier).with_client_auth_cert(certs, key).map_err(|e| format!("client certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pins_parse_the_forms_openclaw_and_incus_print() {
        let hex = "e7333b78".repeat(8);
        let p = Pin::parse(&hex).unwrap();
        assert_eq!(p.hex(), hex);
        let colons: Vec<String> = p.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(Pin::parse(&format!("sha256:{}", colons.join(":"))), Some(p));
        assert_eq!(Pin::parse("abcd"), None, "too short");
        assert_eq!(Pin::parse(&"zz".repeat(32)), None);
    }

    /// A TLS 1.3 server on a loopback port serving `minted`, answering "ok" to whoever completes
    /// the handshake; returns its port.
    fn server(minted: &crate::tls::Minted, accepts: usize) -> u16 {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(minted.cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(minted.key_pem().as_bytes()).unwrap();
        // Served as given (rustls's own `with_single_cert` would refuse a key not the certificate's).
        let signer = provider().key_provider.load_private_key(key).unwrap();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert], signer));
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Always(certified)));
        let cfg = Arc::new(cfg);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for _ in 0..accepts {
                let (mut tcp, _) = listener.accept().unwrap();
                let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                let _ = tls.write_all(b"ok");
                let _ = tls.flush();
            }
        });
        port
    }

    #[derive(Debug)]
    struct Always(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Always {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    /// Connects with `verifier`; the bytes the server sent, or the handshake's error.
    fn dial(port: u16, verifier: Arc<PinVerifier>) -> Result<String, std::io::Error> {
        let cfg = Arc::new(client_config(verifier));
        let mut conn = rustls::ClientConnection::new(cfg, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let mut got = [0u8; 2];
        tls.read_exact(&mut got)?;
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let ours = crate::tls::mint("127.0.0.1", 1).unwrap();
        let port = server(&ours, 2);
        let v = PinVerifier::new(ours.pin);
        assert_eq!(dial(port, v.clone()).unwrap(), "ok");
        assert_eq!(v.mismatch(), None);

        // Another certificate for the same address (a replaced gateway, or something in between).
        let other = crate::tls::mint("127.0.0.1", 1).unwrap();
        let v = PinVerifier::new(other.pin);
        let e = dial(port, v.clone()).unwrap_err();
        assert!(e.to_string().contains("does not match the pinned sha256"), "{e}");
        assert_eq!(v.mismatch(), Some(PinMismatch { pinned: other.pin, presented: ours.pin }));
    }

    #[test]
    fn a_server_without_the_certificates_key_is_refused() {
        // The pinned certificate served with another key: the signature check fails, pin or not.
        let ours = crate::tls::mint("127.0.0.1", 1).unwrap();
        let impostor =
            crate::tls::Minted { cert_pem: ours.cert_pem.clone(), ..crate::tls::mint("127.0.0.1", 1).unwrap() };
        let port = server(&impostor, 1);
        let v = PinVerifier::new(ours.pin);
        assert!(dial(port, v.clone()).is_err(), "a server that cannot sign for the pinned certificate");
        assert_eq!(v.mismatch(), None, "the pin matched; the signature did not");
    }
}
