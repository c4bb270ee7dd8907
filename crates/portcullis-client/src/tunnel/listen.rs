//! Local listeners: bound once, at the first `Welcome`, and kept across reconnects. Each
//! accepted connection runs in a task of its own on whatever relay connection is current.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use portcullis_core::wire::WireTarget;
use quinn::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::ListenPlan;
use super::splice::{SpliceError, splice};
use super::{Event, Reporter, TunnelError};
use portcullis_net::splice::SpliceEnd;

/// How long a connection accepted while the client reconnects waits for the new session before
/// it is closed.
const WAIT_FOR_SESSION: Duration = Duration::from_secs(30);

/// A bound listener and the target its connections go to.
#[derive(Debug)]
pub(crate) struct Bound {
    pub listener: TcpListener,
    pub local: SocketAddr,
    pub target: WireTarget,
}

/// Binds every planned listener (falling back to an ephemeral port where the plan allows).
pub(crate) async fn bind(plans: &[ListenPlan]) -> Result<Vec<Bound>, TunnelError> {
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        let listener = match TcpListener::bind(plan.bind).await {
            Ok(l) => l,
            Err(e) if plan.fallback_to_ephemeral && may_fall_back(&e) => {
                let any = SocketAddr::new(plan.bind.ip(), 0);
                TcpListener::bind(any)
                    .await
                    .map_err(|source| TunnelError::Listen { addr: any, source })?
            }
            Err(source) => {
                return Err(TunnelError::Listen {
                    addr: plan.bind,
                    source,
                });
            }
        };
        let local = listener
            .local_addr()
            .map_err(|source| TunnelError::Listen {
                addr: plan.bind,
                source,
            })?;
        out.push(Bound {
            listener,
            local,
            target: plan.target.clone(),
        });
    }
    Ok(out)
}

/// Taken by another program, or a privileged port (below 1024) this user may not bind.
fn may_fall_back(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// Accepts until cancelled; each connection becomes a tracked task with a child token.
pub(crate) async fn accept_loop(
    bound: Bound,
    conns: watch::Receiver<Option<Connection>>,
    report: Reporter,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = bound.listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Interactive protocols (Modbus, SSH, VNC) want small writes sent at once.
                let _ = tcp.set_nodelay(true);
                tracker.spawn(carry(
                    tcp,
                    peer,
                    bound.target.clone(),
                    conns.clone(),
                    report.clone(),
                    cancel.child_token(),
                ));
            }
            Err(e) => {
                report(&Event::AcceptFailed {
                    local: bound.local,
                    detail: e.to_string(),
                });
                // Out of file descriptors, typically: give others a moment to close.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One local connection: wait for a session if the client is reconnecting, then splice.
async fn carry(
    tcp: TcpStream,
    peer: SocketAddr,
    target: WireTarget,
    mut conns: watch::Receiver<Option<Connection>>,
    report: Reporter,
    cancel: CancellationToken,
) {
    let conn = tokio::select! {
        () = cancel.cancelled() => return,
        c = current(&mut conns) => c,
    };
    let Some(conn) = conn else {
        report(&Event::StreamFailed {
            peer,
            target,
            detail: "no connection to the relay right now; closed this local connection".into(),
        });
        return;
    };
    match splice(&conn, tcp, &target, cancel.cancelled()).await {
        Ok(_) => {}
        // The client is stopping: its own cut is not news (also when the connection closed
        // under the stream before the stream saw the cancel).
        Err(SpliceError::Ended(SpliceEnd::Cancelled)) => {}
        Err(_) if cancel.is_cancelled() => {}
        Err(SpliceError::Refused { code, message, .. }) => report(&Event::StreamRefused {
            peer,
            target,
            code,
            message,
        }),
        Err(e) => report(&Event::StreamFailed {
            peer,
            target,
            detail: match conn.close_reason() {
                Some(why) => went_with_the_connection(&why),
                None => e.to_string(),
            },
        }),
    }
}

/// Why a tunnelled connection ended when the relay connection carrying it went (a relay
/// restart, a long outage): it cannot be kept, because its device end was the old relay's TCP
/// connection (or the site connector's, for that relay), which is gone with it.
fn went_with_the_connection(why: &quinn::ConnectionError) -> String {
    let why = match why {
        // We closed it ourselves because its control stream was lost: the reason is reported
        // by the `ConnectionLost` event beside this one.
        quinn::ConnectionError::LocallyClosed => "lost".to_owned(),
        quinn::ConnectionError::Reset => "reset: the relay restarted".to_owned(),
        quinn::ConnectionError::TimedOut => "timed out: no answer from the relay".to_owned(),
        other => format!("lost: {other}"),
    };
    format!(
        "the connection to the relay was {why}, and this tunnelled connection could not \
         outlive it (its device end was held by that relay): open it again once `connect` has \
         reconnected"
    )
}

/// The current relay connection, waiting (bounded) while the client reconnects. The watch
/// channel's read guard is released before returning: holding it would block the supervisor's
/// next update.
async fn current(conns: &mut watch::Receiver<Option<Connection>>) -> Option<Connection> {
    match tokio::time::timeout(WAIT_FOR_SESSION, conns.wait_for(Option::is_some)).await {
        Ok(Ok(guard)) => guard.clone(),
        _ => None,
    }
}
