//! A stream carried through a site connector: the `Dial` on the connector's connection, and the
//! splice between the vendor's QUIC stream and the connector's.

use std::sync::Arc;

use portcullis_core::Mode;
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode};
use quinn::{RecvStream, SendStream};
use tokio::time::timeout;

use crate::Shared;
use crate::connectors::LiveConnector;
use crate::registry::LiveSession;
use portcullis_net::frames::{read_frame, write_frame};

/// The connector's side of a dialed stream.
#[derive(Debug)]
pub(crate) struct ConnectorStream {
    pub send: SendStream,
    pub recv: RecvStream,
    /// Device bytes that arrived with the connector's `Opened`.
    pub leftover: Vec<u8>,
    pub via: Arc<LiveConnector>,
}

/// Asks `site`'s connector to dial `host:port` for device `device`, under `mode` (which a
/// connector whose allowlist filters Modbus enforces too). A refusal carries the connector's own
/// message (which names what its allowlist or the device said).
pub(crate) async fn dial(
    shared: &Shared,
    s: &LiveSession,
    site: &str,
    device: &str,
    host: &str,
    port: u16,
    mode: Mode,
) -> Result<ConnectorStream, (RefusalCode, String)> {
    let offline = || {
        (
            RefusalCode::ConnectorOffline,
            format!(
                "the site connector of {site} is not connected; the plant's connector must be running and reach the relay"
            ),
        )
    };
    let via = shared.connectors.get(site).ok_or_else(offline)?;
    let (mut send, mut recv) = via.conn.open_bi().await.map_err(|_| offline())?;
    let frame = Frame::Dial {
        session_id: s.id.clone(),
        device: device.to_owned(),
        host: host.to_owned(),
        port,
        mode,
    };
    write_frame(&mut send, &frame)
        .await
        .map_err(|_| offline())?;
    // The connector gives the device its own dial timeout (the relay's by default); a second
    // more covers the round trip.
    let limit = shared.config.dial_timeout + std::time::Duration::from_secs(1);
    let mut dec = FrameDecoder::new();
    match timeout(limit, read_frame(&mut recv, &mut dec)).await {
        Ok(Ok(Some(Frame::Opened))) => Ok(ConnectorStream {
            send,
            recv,
            leftover: dec.into_remainder(),
            via,
        }),
        Ok(Ok(Some(Frame::Refused { code, message }))) => Err((code, message)),
        Ok(Ok(Some(other))) => {
            tracing::warn!(
                "site {site} connector answered a Dial with {}",
                other.name()
            );
            Err((
                RefusalCode::ConnectorRefused,
                "the site connector gave an answer the relay does not understand".into(),
            ))
        }
        Ok(Ok(None) | Err(_)) => Err(offline()),
        Err(_) => Err((
            RefusalCode::DialTimeout,
            format!("the site connector of {site} did not answer in time"),
        )),
    }
}
