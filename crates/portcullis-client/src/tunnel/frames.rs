//! Reading and writing frames on QUIC streams.

use portcullis_core::wire::{Frame, FrameDecoder, MAX_FRAME_LEN};
use quinn::{RecvStream, SendStream};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameIoError {
    /// The stream ended cleanly before a whole frame arrived.
    #[error("the relay closed the stream")]
    Finished,
    #[error("the relay's stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("cannot send to the relay: {0}")]
    Write(#[from] quinn::WriteError),
    /// The bytes are not a frame: the stream is out of step and must be dropped.
    #[error("the relay sent a malformed frame: {0}")]
    Wire(#[from] portcullis_core::wire::WireError),
}

/// Encodes `frame` and writes it whole.
pub(crate) async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), FrameIoError> {
    let bytes = frame.to_vec()?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// The next frame from `recv`, reading as much as needed into `decoder`. Bytes past the frame
/// stay in the decoder (the next frame, or on a data stream the device's first bytes).
///
/// Memory: one read adds at most one frame's worth (`MAX_FRAME_LEN`) to what the decoder holds,
/// and the decoder refuses an over-long length prefix as soon as it arrives.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Frame, FrameIoError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        match recv.read_chunk(MAX_FRAME_LEN, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes),
            None => return Err(FrameIoError::Finished),
        }
    }
}
