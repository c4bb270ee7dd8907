//! A refused connection, vendor client or site connector alike: the code and sentence the peer
//! sees, what the audit log records, and who the peer said it was (`W`: the token's claims for a
//! vendor, the claimed site for a connector). One way to count it, bound its audit events and
//! tell the peer.

use std::time::Duration;

use portcullis_core::wire::RefusalCode;
use quinn::{Connection, SendStream, VarInt};
use tokio::time::timeout;

use crate::Shared;
use crate::conn::CLOSE_REFUSED;

#[derive(Debug)]
pub(crate) struct Refusal<W> {
    pub code: RefusalCode,
    /// The sentence the peer sees.
    pub message: String,
    /// What the audit log records (the message unless more is known).
    pub detail: String,
    /// Who the peer said it was.
    pub who: W,
    /// Audited whatever the budget: a peer the broker knows (a verified token, a certificate it
    /// issued) or an attempt worth investigating (a genuine token on the wrong key).
    pub always_audited: bool,
}

impl<W: Default> Refusal<W> {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code,
            detail: message.clone(),
            message,
            who: W::default(),
            always_audited: false,
        }
    }
}

impl<W> Refusal<W> {
    /// Counts the refusal; `Some(suppressed before)` when it is to be audited. Anyone who can
    /// finish a TLS handshake can be refused as often as they like, so anonymous refusals share
    /// one budget and the first one written after a quiet spell says how many were left out.
    pub fn audit_budget(&self, shared: &Shared) -> Option<u64> {
        shared.metrics.refused(self.code);
        if self.always_audited {
            Some(0)
        } else {
            shared.anonymous_refusals.take()
        }
    }

    /// Tells the peer on `send`, then closes the connection once the peer has read the answer
    /// (or after a second).
    pub async fn tell_and_close(&self, conn: &Connection, send: &mut SendStream) {
        if portcullis_net::frames::refuse(send, self.code, &self.message).await {
            let _ = timeout(Duration::from_secs(1), conn.closed()).await;
        }
        conn.close(
            VarInt::from_u32(CLOSE_REFUSED),
            self.code.as_str().as_bytes(),
        );
    }
}
