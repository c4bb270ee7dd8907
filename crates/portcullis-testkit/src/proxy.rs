//! [`CutProxy`]: a TCP forwarder on `127.0.0.1:0` that a test can cut and restore, to simulate
//! a dependency becoming unreachable, typically PostgreSQL under a running service:
//!
//! ```no_run
//! # async fn demo() {
//! use portcullis_testkit::proxy::CutProxy;
//! let (proxy, url) = CutProxy::start_for_url("postgres://postgres@127.0.0.1:5432/test").await;
//! // ... start the service with `url`, then:
//! proxy.cut().await; // every forwarded connection is reset; new ones are reset at once
//! proxy.restore(); // new connections reach the database again
//! # }
//! ```
//!
//! Cutting resets (TCP RST) both sides of every open connection and returns once they are all
//! closed; while cut, new connections are accepted and reset immediately, never forwarded.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Bumped by every cut: a connection admitted in an older epoch is reset.
    epoch: u64,
    cut: bool,
    /// Connections being forwarded now.
    live: usize,
    /// Connections ever forwarded.
    forwarded: usize,
    /// Connections reset on arrival because the proxy was cut.
    refused: usize,
}

/// A cuttable TCP forwarder. Dropping it closes its listener and every connection.
#[derive(Debug)]
pub struct CutProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<watch::Sender<State>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("proxy listener address");
        let state = Arc::new(watch::Sender::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&state)));
        CutProxy {
            addr,
            upstream,
            state,
            task,
        }
    }

    /// Starts a proxy in front of the `host:port` of a URL such as
    /// `postgres://user@host:port/db?x` (port 5432 when absent) and returns it with the URL
    /// pointing at the proxy instead.
    pub async fn start_for_url(url: &str) -> (CutProxy, String) {
        let (head, authority, tail) = split_authority(url);
        let target = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:5432")
        };
        let upstream = tokio::net::lookup_host(&target)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("cannot resolve {target} from {url}"));
        let proxy = CutProxy::start(upstream).await;
        let proxied = format!("{head}{}{tail}", proxy.addr);
        (proxy, proxied)
    }

    /// Where clients connect (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Resets every forwarded connection (both sides) and waits until all are closed. Until
    /// [`restore`](Self::restore), new connections are reset on arrival.
    pub async fn cut(&self) {
        self.state.send_modify(|s| {
            s.cut = true;
            s.epoch += 1;
        });
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.live == 0).await;
    }

    /// Lets new connections through again (connections cut earlier stay closed).
    pub fn restore(&self) {
        self.state.send_modify(|s| s.cut = false);
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.state.borrow().cut
    }

    /// Connections being forwarded now.
    pub fn live(&self) -> usize {
        self.state.borrow().live
    }

    /// Connections ever forwarded (accepted while not cut).
    pub fn forwarded(&self) -> usize {
        self.state.borrow().forwarded
    }

    /// Connections reset on arrival because the proxy was cut.
    pub fn refused(&self) -> usize {
        self.state.borrow().refused
    }

    /// Waits until at least `n` connections were reset on arrival: "the service retried".
    pub async fn wait_refused(&self, n: usize) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.refused >= n).await;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `("scheme://user@", "host:port", "/db?x")`; no scheme means the whole URL up to `/`.
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (&url[..host_start], &url[host_start..end], &url[end..])
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<watch::Sender<State>>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let mut epoch = None;
                // Admit and count atomically with respect to `cut`.
                state.send_if_modified(|s| {
                    if s.cut {
                        s.refused += 1;
                    } else {
                        s.live += 1;
                        s.forwarded += 1;
                        epoch = Some(s.epoch);
                    }
                    true
                });
                match epoch {
                    Some(epoch) => {
                        conns.spawn(forward(client, upstream, epoch, Arc::clone(&state)));
                    }
                    None => reset(client),
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Decrements `live` when a forwarded connection ends, however it ends.
struct Live(Arc<watch::Sender<State>>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.live -= 1);
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    epoch: u64,
    state: Arc<watch::Sender<State>>,
) {
    let _live = Live(Arc::clone(&state));
    let mut rx = state.subscribe();
    let mut server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => return reset(client), // upstream down: the client sees a reset
        },
        _ = rx.wait_for(|s| s.epoch != epoch) => return reset(client),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = rx.wait_for(|s| s.epoch != epoch) => true,
    };
    if was_cut {
        reset(client);
        reset(server);
    }
}

/// Closes with RST instead of FIN: the peer sees "connection reset", as on a broken network.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::EchoDevice;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn ping(c: &mut TcpStream) -> std::io::Result<()> {
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    /// After a cut the peer reads EOF or a reset, never data.
    async fn assert_closed(c: &mut TcpStream) {
        let mut buf = [0u8; 16];
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("read {n} bytes from a cut connection"),
        }
    }

    #[tokio::test]
    async fn cut_resets_connections_and_restore_lets_new_ones_through() {
        let dev = EchoDevice::start().await;
        let proxy = CutProxy::start(dev.addr()).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut c).await.unwrap();
        assert_eq!((proxy.live(), dev.open()), (1, 1));

        proxy.cut().await;
        assert!(proxy.is_cut());
        assert_eq!(proxy.live(), 0);
        assert_closed(&mut c).await;
        dev.next_close().await; // the upstream side saw the cut too

        // While cut: accepted by the proxy, reset at once, never forwarded.
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_closed(&mut refused).await;
        proxy.wait_refused(1).await;
        assert_eq!(dev.accepted(), 1);

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut again).await.unwrap();
        assert_eq!(
            (proxy.forwarded(), proxy.refused(), dev.accepted()),
            (2, 1, 2)
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_resets_the_client() {
        let dev = EchoDevice::start().await;
        let gone = dev.addr();
        drop(dev);
        // Wait (bounded) for the dropped device's listener to close.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while TcpStream::connect(gone).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let proxy = CutProxy::start(gone).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_closed(&mut c).await;
    }

    #[test]
    fn splits_urls_around_host_and_port() {
        assert_eq!(
            split_authority("postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
            (
                "postgres://postgres@",
                "127.0.0.1:5432",
                "/test?sslmode=disable"
            )
        );
        assert_eq!(
            split_authority("postgres://u:p@w@db/x"),
            ("postgres://u:p@w@", "db", "/x")
        );
        assert_eq!(split_authority("127.0.0.1:9"), ("", "127.0.0.1:9", ""));
    }

    #[tokio::test]
    async fn start_for_url_points_the_url_at_the_proxy() {
        let dev = EchoDevice::start().await;
        let url = format!("postgres://postgres@{}/test?x=1", dev.addr());
        let (proxy, proxied) = CutProxy::start_for_url(&url).await;
        assert_eq!(proxy.upstream(), dev.addr());
        assert_eq!(
            proxied,
            format!("postgres://postgres@{}/test?x=1", proxy.addr())
        );
    }
}
