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
