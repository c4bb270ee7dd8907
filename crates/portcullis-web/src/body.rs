//! Reading the whole request body before routing.
//!
//! A handler that refuses a request early (no session, wrong role, cross-origin) leaves body bytes
//! unread on the connection. hyper then closes it with data still in flight, the kernel answers the
//! client's pending bytes with a reset, and the client loses the response it was sent: a script
//! sees "connection reset" (over TLS, "EOF occurred in violation of protocol") instead of "log in
//! first". So the body is read first, up to the limit; a larger one is drained a bounded amount
//! so its sender still reads the 413.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::MAX_BODY;
use crate::error::ApiError;

/// How much of an oversized body is read and thrown away so the 413 reaches its sender; past
/// this the connection is simply closed. Memory stays at one chunk: nothing is kept.
const DRAIN_MAX: usize = 1024 * 1024;
/// How long the drain may take: a sender trickling bytes does not hold the task any longer.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Middleware: the request continues with its body in memory (at most `MAX_BODY` bytes).
pub async fn read_whole(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let mut kept = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        let Ok(chunk) = chunk else {
            return ApiError::BadRequest("the request body could not be read".into())
                .into_response();
        };
        if kept.len() + chunk.len() > MAX_BODY {
            drain(body, kept.len() + chunk.len()).await;
            return ApiError::TooLarge.into_response();
        }
        kept.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}

async fn drain(mut body: Body, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen <= DRAIN_MAX {
            match next_chunk(&mut body).await {
                Some(Ok(chunk)) => seen += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

/// The next data chunk; trailers are skipped.
async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}
