//! Reading and writing `portcullis_core::wire` frames on QUIC streams (the relay keeps the same
//! small helper in `portcullis-relay/src/frames.rs`).

use portcullis_core::wire::{Frame, FrameDecoder, MAX_FRAME_LEN, WireError};
use quinn::{RecvStream, SendStream};

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the stream ended before a whole frame arrived")]
    Truncated,
}

/// The next frame, or `None` when the stream ended cleanly before any byte of one. Bytes past
/// the frame stay in `dec` (the next frame, or on a dial stream the first bytes for the device).
///
/// Memory: one read adds at most `MAX_FRAME_LEN` to what the decoder holds, and the decoder
/// refuses an over-long length prefix as soon as it arrives.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    dec: &mut FrameDecoder,
) -> Result<Option<Frame>, FrameError> {
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(Some(f));
        }
        match recv.read_chunk(MAX_FRAME_LEN, true).await? {
            Some(chunk) => dec.push(&chunk.bytes),
            None if dec.buffered().is_empty() => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
}

pub(crate) async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.to_vec()?;
    send.write_all(&bytes).await?;
    Ok(())
}
