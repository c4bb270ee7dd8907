//! What every accepted QUIC connection needs, vendor client or site connector alike: the close
//! codes, the negotiated ALPN and the client certificate's thumbprint. A leaf: it imports no
//! other module of the relay.

use portcullis_auth::token::thumbprint;
use quinn::Connection;

/// QUIC application close codes the relay uses.
pub(crate) const CLOSE_REFUSED: u32 = 1;
pub(crate) const CLOSE_ENDED: u32 = 2;
pub(crate) const CLOSE_PROTOCOL: u32 = 3;

/// The ALPN protocol the handshake settled on (the server offers only its own ids, so this is
/// one of them).
pub(crate) fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// base64url SHA-256 of the client's end-entity certificate: what a token's `cnf` names, and
/// what a site's enrollment recorded.
pub(crate) fn client_thumbprint(conn: &Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| thumbprint(c.as_ref()))
}
