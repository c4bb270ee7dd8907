//! `portcullis connect`: local TCP listeners carried over one QUIC connection to the relay.
//!
//! ```text
//! identity + token -> QUIC (ALPN portcullis/1) -> Hello -> Welcome -> listeners
//!                                                         |  each local connection: a stream
//!                              Warning ... Ending  <------+  (Open -> Opened -> bytes)
//! ```
//!
//! [`run`] owns the session: it fetches a token for a fresh ephemeral certificate, connects,
//! sends `Hello`, and on `Welcome` binds the listeners ([`plan_listeners`]). It then follows the
//! control stream: `Warning`s are reported, `Ending` ends the run. A connection lost without
//! `Ending` while the window is open is replaced (new identity, new token) with backoff, the
//! listeners staying open; connections accepted meanwhile wait for it. After the window end it
//! gives up. The caller's `shutdown` future (Ctrl-C, SIGTERM) closes everything cleanly.
//!
//! What happens is told through [`Event`]s to the caller's [`Reporter`]; the library prints
//! nothing itself.

mod forward;
mod listen;
mod relay;
mod splice;
mod tokens;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::wire::{EndReason, Frame, RefusalCode, WireTarget};
use quinn::{Connection, VarInt};
use rustls::RootCertStore;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use forward::{ForwardError, ForwardSpec, ListenPlan, plan_listeners};
pub use relay::Welcome;
pub use tokens::{BrokerTokens, TokenError, TokenSource};

use portcullis_net::frames::{FrameError, expect_frame};
use portcullis_net::quic::Congestion;
use relay::{Dialer, EstablishError, Live};

/// QUIC application close code: the client is done (the relay audits `client_closed`).
const CLIENT_CLOSED: VarInt = VarInt::from_u32(0);
/// How long shutdown waits for streams to end and for the relay to acknowledge the close.
const DRAIN: Duration = Duration::from_secs(3);
/// Reconnect backoff: first delay and cap.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What to connect to and how to listen.
pub struct TunnelOptions {
    pub grant_id: i64,
    /// `-L` specifications; empty: one listener per granted target (see [`plan_listeners`]).
    pub forwards: Vec<ForwardSpec>,
    /// CAs trusted for the relay's certificate (the broker's CA).
    pub roots: RootCertStore,
    /// The broker's host, used when the broker announces the relay on an unspecified address.
    pub broker_host: Option<String>,
    /// The congestion controller of the client's QUIC connection (what it sends: uploads).
    pub congestion: Congestion,
}

impl fmt::Debug for TunnelOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelOptions")
            .field("grant_id", &self.grant_id)
            .field("forwards", &self.forwards)
            .field("roots", &self.roots.len())
            .field("broker_host", &self.broker_host)
            .field("congestion", &self.congestion)
            .finish()
    }
}

/// Something the person running `connect` should hear about. Strings from the relay are
/// already made printable (one line, no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session started: the first one, or a replacement after a lost connection.
    Connected {
        relay: String,
        welcome: Welcome,
        reconnected: bool,
    },
    /// A local listener is open: connections to `local` reach `target`. `wanted` is the address
    /// asked for (differs from `local` when the port was taken and an ephemeral one was used).
    Listening {
        local: SocketAddr,
        wanted: SocketAddr,
        target: WireTarget,
    },
    /// The relay warns that the session ends in `remaining`.
    Warning { remaining: Duration },
    /// The connection to the relay was lost; a new one is being made.
    ConnectionLost { detail: String },
    /// A reconnect attempt failed and will be retried after `after`.
    Retrying { detail: String, after: Duration },
    /// The relay refused one local connection's target; only that connection was closed.
    StreamRefused {
        peer: SocketAddr,
        target: WireTarget,
        code: RefusalCode,
        message: String,
    },
    /// One local connection ended with an error; the others go on.
    StreamFailed {
        peer: SocketAddr,
        target: WireTarget,
        detail: String,
    },
    /// A listener could not accept a connection (e.g. out of file descriptors).
    AcceptFailed { local: SocketAddr, detail: String },
}

/// Receives [`Event`]s, from any task.
pub type Reporter = Arc<dyn Fn(&Event) + Send + Sync>;

/// How a run ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The relay ended the session (`Ending`).
    Ended { reason: EndReason, message: String },
    /// The caller's shutdown future completed (Ctrl-C, SIGTERM).
    Interrupted,
}

impl Outcome {
    /// The process exit code for this outcome: 0 when the window simply ended or the vendor
    /// stopped, 3 when access was taken away (revoked, account disabled, policy changed, ...),
    /// so scripts can tell the two apart.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Interrupted
            | Outcome::Ended {
                reason: EndReason::WindowEnd,
                ..
            } => 0,
            Outcome::Ended { .. } => 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The relay said no at the handshake (or on the control stream).
    #[error("the relay refused the connection: {message} ({code})")]
    Refused { code: RefusalCode, message: String },
    #[error("cannot get a relay token: {0}")]
    Token(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The connection was lost and the window is over: nothing to reconnect to.
    #[error("the connection to the relay was lost ({detail}) and the access window has ended")]
    WindowOver { detail: String },
}

impl From<EstablishError> for TunnelError {
    fn from(e: EstablishError) -> Self {
        match e {
            EstablishError::Refused { code, message } => TunnelError::Refused { code, message },
            EstablishError::Token(t) => TunnelError::Token(t.message),
            e @ EstablishError::Unreachable { .. } => TunnelError::Unreachable(e.to_string()),
            e @ EstablishError::Protocol { .. } => TunnelError::Protocol(e.to_string()),
            e @ EstablishError::Local(_) => TunnelError::Local(e.to_string()),
        }
    }
}

/// Runs the tunnel for one grant until the relay ends the session, `shutdown` completes, or an
/// error makes going on pointless. See the module docs.
pub async fn run<T: TokenSource>(
    opts: TunnelOptions,
    tokens: &mut T,
    report: Reporter,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, TunnelError> {
    let mut dialer = Dialer::new(opts.roots, opts.broker_host, opts.congestion);
    tokio::pin!(shutdown);
    let live = tokio::select! {
        () = &mut shutdown => return Ok(Outcome::Interrupted),
        l = dialer.establish(opts.grant_id, tokens) => l?,
    };
    report(&Event::Connected {
        relay: live.relay.clone(),
        welcome: live.welcome.clone(),
        reconnected: false,
    });
    let bound = match plan_listeners(&live.welcome.targets, &opts.forwards) {
        Ok(plans) => listen::bind(&plans).await.map(|b| (plans, b)),
        Err(e) => Err(e.into()),
    };
    let (plans, bound) = match bound {
        Ok(b) => b,
        Err(e) => {
            live.conn.close(CLIENT_CLOSED, b"client closed");
            dialer.wait_idle(DRAIN).await;
            return Err(e);
        }
    };
    let (conn_tx, conn_rx) = watch::channel(Some(live.conn.clone()));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    for (b, plan) in bound.into_iter().zip(&plans) {
        report(&Event::Listening {
            local: b.local,
            wanted: plan.bind,
            target: b.target.clone(),
        });
        tracker.spawn(listen::accept_loop(
            b,
            conn_rx.clone(),
            report.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    drop(conn_rx);
    let result = supervise(
        live,
        &mut dialer,
        opts.grant_id,
        tokens,
        &report,
        Streams {
            conn: &conn_tx,
            cancel: &cancel,
        },
        &mut shutdown,
    )
    .await;
    // Teardown: stop accepting, end the streams, say goodbye to the relay (bounded).
    cancel.cancel();
    tracker.close();
    conn_tx.send_replace(None);
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    dialer.wait_idle(DRAIN).await;
    result
}

/// What the control stream said, or that the connection is gone.
enum Control {
    Ending { reason: EndReason, message: String },
    Refused { code: RefusalCode, message: String },
    Lost(String),
    Broken(String),
}

/// What the local connections hang on: the relay connection new streams open on, and the
/// token that ends them all.
struct Streams<'a> {
    conn: &'a watch::Sender<Option<Connection>>,
    cancel: &'a CancellationToken,
}

/// Follows the session, replacing lost connections, until it ends.
async fn supervise<T: TokenSource, S: Future<Output = ()> + Unpin>(
    mut live: Live,
    dialer: &mut Dialer,
    grant_id: i64,
    tokens: &mut T,
    report: &Reporter,
    streams: Streams<'_>,
    shutdown: &mut S,
) -> Result<Outcome, TunnelError> {
    let mut deadline = Instant::now() + live.welcome.remaining;
    loop {
        let control = tokio::select! {
            () = &mut *shutdown => {
                // The streams learn that the client is stopping before the connection closes
                // under them, so none reports its own cut as a failure.
                streams.cancel.cancel();
                live.conn.close(CLIENT_CLOSED, b"client closed");
                return Ok(Outcome::Interrupted);
            }
            c = follow_control(&mut live, report) => c,
        };
        let detail = match control {
            Control::Ending { reason, message } => {
                live.conn.close(CLIENT_CLOSED, b"ending received");
                return Ok(Outcome::Ended { reason, message });
            }
            Control::Refused { code, message } => {
                live.conn.close(CLIENT_CLOSED, b"refused");
                return Err(TunnelError::Refused { code, message });
            }
            Control::Broken(detail) => {
                live.conn.close(CLIENT_CLOSED, b"protocol error");
                return Err(TunnelError::Protocol(format!(
                    "the relay at {} broke the protocol: {detail}",
                    live.relay
                )));
            }
            Control::Lost(detail) => detail,
        };
        // Lost without `Ending`: a network matter. New streams wait for the next session.
        streams.conn.send_replace(None);
        live.conn.close(CLIENT_CLOSED, b"control stream lost");
        if Instant::now() >= deadline {
            return Err(TunnelError::WindowOver { detail });
        }
        report(&Event::ConnectionLost { detail });
        let next = tokio::select! {
            () = &mut *shutdown => return Ok(Outcome::Interrupted),
            n = reconnect(dialer, grant_id, tokens, deadline, report) => n?,
        };
        deadline = Instant::now() + next.welcome.remaining;
        report(&Event::Connected {
            relay: next.relay.clone(),
            welcome: next.welcome.clone(),
            reconnected: true,
        });
        streams.conn.send_replace(Some(next.conn.clone()));
        live = next;
    }
}

/// Reads the control stream: reports `Warning`s, returns at `Ending` or when the stream or the
/// connection goes away.
async fn follow_control(live: &mut Live, report: &Reporter) -> Control {
    loop {
        match expect_frame(&mut live.control_recv, &mut live.decoder).await {
            Ok(Frame::Warning { remaining_ms }) => report(&Event::Warning {
                remaining: Duration::from_millis(remaining_ms),
            }),
            Ok(Frame::Ending { reason, message }) => {
                return Control::Ending {
                    reason,
                    message: crate::printable(&message, 500),
                };
            }
            Ok(Frame::Refused { code, message }) => {
                return Control::Refused {
                    code,
                    message: crate::printable(&message, 500),
                };
            }
            Ok(other) => {
                return Control::Broken(format!(
                    "{} is not a frame for the control stream",
                    other.name()
                ));
            }
            Err(FrameError::Wire(e)) => return Control::Broken(e.to_string()),
            Err(FrameError::Finished) => {
                // The relay finished the control stream without `Ending`: wait for the
                // connection to go, then treat it as lost.
                let e = live.conn.closed().await;
                return Control::Lost(e.to_string());
            }
            // Why the connection went, when it did (`reset by peer`: a restarted relay's
            // stateless reset; `timed out`: silence), beside how the read failed.
            Err(e) => {
                return Control::Lost(match live.conn.close_reason() {
                    Some(why) => format!("{e}: {why}"),
                    None => e.to_string(),
                });
            }
        }
    }
}

/// New sessions until one works, the window ends, or a refusal says it never will.
async fn reconnect<T: TokenSource>(
    dialer: &mut Dialer,
    grant_id: i64,
    tokens: &mut T,
    deadline: Instant,
    report: &Reporter,
) -> Result<Live, TunnelError> {
    let mut delay = RETRY_FIRST;
    loop {
        match dialer.establish(grant_id, tokens).await {
            Ok(live) => return Ok(live),
            Err(e) if e.is_transient() => {
                // A retry that could only start after the window end would be refused anyway.
                let after = delay;
                if Instant::now() + after >= deadline {
                    return Err(TunnelError::WindowOver {
                        detail: e.to_string(),
                    });
                }
                report(&Event::Retrying {
                    detail: e.to_string(),
                    after,
                });
                tokio::time::sleep(after).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
