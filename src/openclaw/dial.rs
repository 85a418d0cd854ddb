//! Opening a gateway's WebSocket: `ws://` for a gateway on this machine's loopback, `wss://` for
//! one on another host — then only to the server presenting the certificate fleet minted for it
//! and pinned (`crate::tls`). A pinned gateway is never reached in clear, and a `wss://` gateway
//! without a pin is never reached at all (its token would go to whoever answers).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::tls::pin::{client_config, PinVerifier};
use crate::tls::{Pin, PinMismatch};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a WebSocket could not be opened.
#[derive(Debug)]
pub enum DialError {
    /// The server presented another certificate than the pinned one.
    Pin(PinMismatch),
    Other(String),
}

/// Opens the WebSocket at `url` within 10 s.
pub async fn open(url: &str, pin: Option<Pin>) -> Result<Socket, DialError> {
    let cerr = DialError::Other;
    let tls = url.starts_with("wss://");
    let (connector, verifier) = match (tls, pin) {
        (false, None) => (Connector::Plain, None),
        (false, Some(_)) => {
            return Err(cerr("its certificate is pinned, so it is reached over wss:// only, never in clear".into()))
        }
        (true, None) => return Err(cerr(
            "no certificate is pinned for it (fleet pins the one it mints when it starts the gateway: `fleet apply`)"
                .into(),
        )),
        (true, Some(pin)) => {
            let v = PinVerifier::new(pin);
            (Connector::Rustls(Arc::new(client_config(v.clone()))), Some(v))
        }
    };
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)),
    )
    .await
    .map_err(|_| cerr("timed out".into()))?;
    match opened {
        Ok((ws, _)) => Ok(ws),
        Err(e) => match verifier.and_then(|v| v.mismatch()) {
            Some(m) => Err(DialError::Pin(m)),
            None => Err(cerr(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(r: Result<Socket, DialError>) -> String {
        match r {
            Err(DialError::Other(w)) => w,
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn a_pinned_gateway_is_never_dialled_in_clear_nor_a_tls_one_without_a_pin() {
        // Refused before any connection is tried (nothing listens on port 1).
        let pin = Pin([7; 32]);
        assert!(why(open("ws://127.0.0.1:1", Some(pin)).await).contains("wss:// only"));
        assert!(why(open("wss://127.0.0.1:1", None).await).contains("no certificate is pinned"));
    }

    #[tokio::test]
    async fn another_certificate_is_a_pin_mismatch_naming_both() {
        let served = crate::tls::mint("127.0.0.1", 1).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cfg = {
            use rustls::pki_types::pem::PemObject;
            let cert = rustls::pki_types::CertificateDer::from_pem_slice(served.cert_pem.as_bytes()).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(served.key_pem().as_bytes()).unwrap();
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap()
        };
        // A plain thread: the server's side of one handshake, blocking.
        std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
            let _ = conn.complete_io(&mut tcp);
        });
        let pinned = Pin([7; 32]);
        match open(&format!("wss://127.0.0.1:{port}"), Some(pinned)).await {
            Err(DialError::Pin(m)) => assert_eq!((m.pinned, m.presented), (pinned, served.pin)),
            other => panic!("expected a pin mismatch, got {:?}", other.err()),
        }
    }
}
