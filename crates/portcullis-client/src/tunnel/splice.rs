//! One local TCP connection carried on one QUIC stream: `Open`, then bytes both ways through
//! [`portcullis_net::splice`], which reads the relay's `Opened` (or `Refused`) while the upload
//! has already started (docs/wire-protocol.md, "A data stream").
//!
//! Memory per tunnelled connection: uploads are read into buffers of [`BUF_LEN`] bytes that are
//! handed to quinn whole (no copy of ours; a buffer is reused once quinn has released it);
//! downloads are written straight from the chunks quinn already holds. Everything else is
//! bounded by QUIC flow control (`portcullis_net::quic::transport_config`) and the kernel's
//! socket buffers.

use std::future::Future;

use portcullis_core::wire::{Frame, RefusalCode, WireTarget};
use portcullis_net::frames::{FrameError, write_frame};
use portcullis_net::splice::{Peer, Splice, SpliceEnd};
use quinn::Connection;
use tokio::net::TcpStream;

use crate::printable;

/// Bytes moved per read in each direction. 128 KiB keeps system calls per byte low at
/// loopback and LAN speeds (a 64 KiB socket read is the common case; bigger reads happen when
/// the peer is faster than us) while bounding memory per connection.
pub(crate) const BUF_LEN: usize = 128 * 1024;

/// How a tunnelled connection ended, when not cleanly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpliceError {
    #[error("the relay refused {target}: {message} ({code})")]
    Refused {
        target: String,
        code: RefusalCode,
        message: String,
    },
    #[error("cannot open a stream to the relay: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// Any other end but a clean close: a reset, an I/O error, the idle timeout or a cut.
    #[error("{0}")]
    Ended(SpliceEnd),
}

/// Carries `tcp` to `target` over a new stream of `conn`, until both directions are done or
/// `until` completes. Returns the bytes sent and received.
pub(crate) async fn splice(
    conn: &Connection,
    tcp: TcpStream,
    target: &WireTarget,
    until: impl Future<Output = ()>,
) -> Result<(u64, u64), SpliceError> {
    let (mut send, recv) = conn.open_bi().await?;
    let open = Frame::Open {
        device: target.device.clone(),
        port: target.port,
    };
    write_frame(&mut send, &open).await?;
    // Upload starts at once, without waiting for `Opened`: the relay holds what follows `Open`
    // until the device is connected (and drops it on `Refused`), which saves a round trip for
    // protocols whose client speaks first.
    let spliced = Splice::new(Peer::Tcp(tcp), Peer::quic_awaiting_opened(send, recv))
        .chunk_size(BUF_LEN)
        .run(until)
        .await;
    match spliced.end {
        SpliceEnd::Closed { .. } => Ok((spliced.to_device, spliced.to_client)),
        SpliceEnd::Refused { code, message } => Err(SpliceError::Refused {
            target: format!("{}:{}", printable(&target.device, 64), target.port),
            code,
            message: printable(&message, 300),
        }),
        SpliceEnd::Protocol(what) => Err(SpliceError::Ended(SpliceEnd::Protocol(printable(
            &what, 300,
        )))),
        other => Err(SpliceError::Ended(other)),
    }
}
