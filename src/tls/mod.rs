//! TLS with a pinned peer, for the two servers fleet reaches over a network it does not trust:
//! OpenClaw gateways on other hosts (`wss://`, a certificate fleet mints and pins) and Incus
//! daemons (their own certificate, pinned at enrolment). The pin is the sha256 of the leaf
//! certificate's DER — what OpenClaw (`fingerprint256`) and Incus (the certificate fingerprint)
//! call a certificate's fingerprint. No names, no chains, no CAs: the peer is the one whose
//! certificate fleet recorded, and it proves it holds that certificate's key in the handshake.

pub mod mint;
pub mod pin;

pub use mint::{mint, Minted};
pub use pin::{Pin, PinMismatch};
