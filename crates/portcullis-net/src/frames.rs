//! `portcullis_core::wire` frames on QUIC streams: the one reader and writer the relay, the
//! vendor client, the site connector and their tests all use.
//!
//! Bytes read past a frame stay in the caller's decoder: the next frame, or on a data stream the
//! first bytes for the other side, which the splice must send before anything it reads
//! afterwards.
//!
//! Memory: one read adds at most `MAX_FRAME_LEN` to what the decoder holds, and the decoder
//! refuses an over-long length prefix as soon as it arrives.

use portcullis_core::wire::{Frame, FrameDecoder, MAX_FRAME_LEN, RefusalCode, WireError};
use quinn::{RecvStream, SendStream};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not a frame: the stream is out of step and must be dropped.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream ended part-way through a frame.
    #[error("the stream ended before a whole frame arrived")]
    Truncated,
    /// The stream ended cleanly where a frame was required ([`expect_frame`]).
    #[error("the stream ended")]
    Finished,
}

/// The next frame, or `None` when the stream ended cleanly before any byte of one.
pub async fn read_frame(
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

/// The next frame, where the stream ending is an error too ([`FrameError::Finished`]).
pub async fn expect_frame(
    recv: &mut RecvStream,
    dec: &mut FrameDecoder,
) -> Result<Frame, FrameError> {
    read_frame(recv, dec).await?.ok_or(FrameError::Finished)
}

/// Encodes `frame` and writes it whole.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.to_vec()?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Sends `Refused` with `code` and `message` and finishes the stream: the one way every side
/// says no to a stream. Best effort: the peer may already be gone, and a refusal owes it
/// nothing more. True when the refusal was handed to QUIC.
pub async fn refuse(send: &mut SendStream, code: RefusalCode, message: &str) -> bool {
    let frame = Frame::Refused {
        code,
        message: message.to_owned(),
    };
    if write_frame(send, &frame).await.is_err() {
        return false;
    }
    let _ = send.finish();
    true
}
