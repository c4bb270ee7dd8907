//! One local TCP connection carried on one QUIC stream: `Open`, `Opened` (or `Refused`), then
//! bytes both ways with half-close mapped across (docs/wire-protocol.md, "A data stream").
//!
//! Memory per tunnelled connection: uploads are read into buffers of [`BUF_LEN`] bytes that are
//! handed to quinn whole (no copy of ours; a buffer is reused once quinn has released it);
//! downloads are written straight from the chunks quinn already holds. Everything else is
//! bounded by QUIC flow control (`portcullis_net::quic::transport_config`) and the kernel's
//! socket buffers.

use bytes::BytesMut;
use portcullis_core::wire::{Frame, FrameDecoder, RefusalCode, WireTarget};
use portcullis_net::quic::read_tcp_chunk;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::printable;
use portcullis_net::frames::{FrameError, expect_frame, write_frame};

/// Bytes moved per read in each direction. 128 KiB keeps system calls per byte low at
/// loopback and LAN speeds (a 64 KiB socket read is the common case; bigger reads happen when
/// the peer is faster than us) while bounding memory per connection.
pub(crate) const BUF_LEN: usize = 128 * 1024;

/// QUIC application error code for "the local side failed" (stream reset / stop sending). The
/// relay maps a reset to a TCP RST towards the device.
const ABORT: VarInt = VarInt::from_u32(1);

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
    #[error("the relay sent {0} instead of Opened")]
    Unexpected(&'static str),
    #[error("local connection failed: {0}")]
    Local(std::io::Error),
    #[error("the relay's stream failed: {0}")]
    Remote(String),
}

/// Carries `tcp` to `target` over a new stream of `conn`, until both directions are done.
/// Returns the bytes sent and received.
pub(crate) async fn splice(
    conn: &Connection,
    mut tcp: TcpStream,
    target: &WireTarget,
) -> Result<(u64, u64), SpliceError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let open = Frame::Open {
        device: target.device.clone(),
        port: target.port,
    };
    write_frame(&mut send, &open).await?;
    let (mut local_in, mut local_out) = tcp.split();
    // Upload starts at once, without waiting for `Opened`: the relay holds what follows `Open`
    // until the device is connected (and drops it on `Refused`), which saves a round trip for
    // protocols whose client speaks first.
    let result = tokio::try_join!(
        upload(&mut local_in, &mut send),
        download(&mut recv, &mut local_out, target),
    );
    if result.is_err() {
        // Whatever failed, the other side should not wait for bytes that will never come: a
        // reset is the QUIC form of a TCP RST.
        let _ = send.reset(ABORT);
        let _ = recv.stop(ABORT);
    }
    result
}

/// Local -> relay. Local EOF finishes the QUIC send side (TCP FIN -> QUIC FIN); the device's
/// direction goes on until the relay finishes too.
async fn upload(local: &mut ReadHalf<'_>, send: &mut SendStream) -> Result<u64, SpliceError> {
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    loop {
        let Some(chunk) = read_tcp_chunk(local, &mut buf, BUF_LEN)
            .await
            .map_err(SpliceError::Local)?
        else {
            // Already reset by the relay (it refused the stream): nothing left to finish.
            let _ = send.finish();
            return Ok(total);
        };
        let n = chunk.len();
        match send.write_chunk(chunk).await {
            Ok(()) => total += n as u64,
            // The relay reads no more (after `Refused`, or the device stopped reading): stop
            // uploading and let the download side say why, or finish.
            Err(quinn::WriteError::Stopped(_)) => return Ok(total),
            Err(e) => return Err(SpliceError::Remote(e.to_string())),
        }
    }
}

/// Relay -> local: waits for `Opened` (forwarding any device bytes that came in the same read),
/// then copies until the relay finishes (QUIC FIN -> TCP write shutdown).
async fn download(
    recv: &mut RecvStream,
    local: &mut WriteHalf<'_>,
    target: &WireTarget,
) -> Result<u64, SpliceError> {
    let mut decoder = FrameDecoder::new();
    match expect_frame(recv, &mut decoder).await? {
        Frame::Opened => {}
        Frame::Refused { code, message } => {
            return Err(SpliceError::Refused {
                target: format!("{}:{}", printable(&target.device, 64), target.port),
                code,
                message: printable(&message, 300),
            });
        }
        other => return Err(SpliceError::Unexpected(other.name())),
    }
    let early = decoder.into_remainder();
    let mut total = early.len() as u64;
    if !early.is_empty() {
        local.write_all(&early).await.map_err(SpliceError::Local)?;
    }
    loop {
        match recv.read_chunk(BUF_LEN, true).await {
            Ok(Some(chunk)) => {
                local
                    .write_all(&chunk.bytes)
                    .await
                    .map_err(SpliceError::Local)?;
                total += chunk.bytes.len() as u64;
            }
            Ok(None) => {
                // The device closed its side; ours may still be sending.
                let _ = local.shutdown().await;
                return Ok(total);
            }
            Err(e) => return Err(SpliceError::Remote(e.to_string())),
        }
    }
}
