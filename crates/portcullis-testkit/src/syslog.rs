//! A syslog collector for tests and benchmarks, on loopback: TCP or TLS with octet-counting
//! framing (RFC 6587 / RFC 5425), or UDP. Every message it receives goes to a channel with the
//! instant it arrived. `stop` closes the listener and shuts a clean collector's connections
//! down: it closes its side (a TCP FIN, or TLS close_notify then FIN) and reads on until the
//! sender closes too, so what the sender had written is received, not dropped unread with the
//! socket. `restart` waits for that, then listens again on the same port, so messages still
//! arrive in the order they were sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// What the collector speaks.
#[derive(Debug, Clone)]
pub enum Kind {
    Tcp,
    Tls(Arc<ServerConfig>),
    Udp,
}

#[derive(Debug)]
pub struct Receiver {
    kind: Kind,
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<(Instant, String)>,
    pub rx: mpsc::UnboundedReceiver<(Instant, String)>,
    stop: Option<watch::Sender<bool>>,
    /// Connections not yet closed by the sender (counting those draining after a stop).
    open: Arc<watch::Sender<usize>>,
}

/// How long a stopped connection waits for the sender to close its side; a sender that never
/// notices is cut then, so a broken build fails instead of hanging.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Receiver {
    /// Listens on a free loopback port.
    pub async fn start(kind: Kind) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = Receiver {
            kind,
            addr: "127.0.0.1:0".parse().unwrap(),
            tx,
            rx,
            stop: None,
            open: Arc::new(watch::channel(0).0),
        };
        r.listen().await;
        r
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `[syslog] server` URL for this collector.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            Kind::Tcp => "tcp",
            Kind::Tls(_) => "tcp+tls",
            Kind::Udp => "udp",
        };
        format!("{scheme}://{}", self.addr)
    }

    async fn listen(&mut self) {
        let (stop_tx, stop_rx) = watch::channel(false);
        self.stop = Some(stop_tx);
        let tx = self.tx.clone();
        let open = self.open.clone();
        match self.kind.clone() {
            Kind::Udp => {
                let sock = UdpSocket::bind(self.addr).await.unwrap();
                self.addr = sock.local_addr().unwrap();
                tokio::spawn(async move {
                    let mut stop = stop_rx;
                    let mut buf = vec![0u8; 65536];
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return,
                            r = sock.recv(&mut buf) => {
                                let n = r.unwrap();
                                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                                if tx.send((Instant::now(), text)).is_err() { return; }
                            }
                        }
                    }
                });
            }
            kind => {
                let listener = TcpListener::bind(self.addr).await.unwrap();
                self.addr = listener.local_addr().unwrap();
                tokio::spawn(async move {
                    let mut stop = stop_rx;
                    loop {
                        let (sock, _) = tokio::select! {
                            _ = stop.changed() => return,
                            a = listener.accept() => a.unwrap(),
                        };
                        let (tx, stop) = (tx.clone(), stop.clone());
                        let open = Open::count(&open);
                        match &kind {
                            Kind::Tls(config) => {
                                let acceptor = TlsAcceptor::from(config.clone());
                                tokio::spawn(async move {
                                    if let Ok(tls) = acceptor.accept(sock).await {
                                        read_frames(tls, tx, stop).await;
                                    }
                                    drop(open);
                                });
                            }
                            _ => {
                                tokio::spawn(async move {
                                    read_frames(sock, tx, stop).await;
                                    drop(open);
                                });
                            }
                        }
                    }
                });
            }
        }
    }

    /// Closes the listener and shuts every connection down cleanly (see the module's note).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }

    /// Stops, waits until the sender has closed every old connection, and listens again on the
    /// same port.
    pub async fn restart(&mut self) {
        self.stop();
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(DRAIN_LIMIT, open.wait_for(|n| *n == 0)).await;
        self.listen().await;
    }

    /// The next message, waiting at most `within`.
    pub async fn next_within(&mut self, within: std::time::Duration) -> Option<(Instant, String)> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One open connection, counted in `Receiver::open` while it lives.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn count(open: &Arc<watch::Sender<usize>>) -> Open {
        open.send_modify(|n| *n += 1);
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Reads `LEN SP MSG` frames until EOF. On `stop` it closes its own side and reads on until
/// the sender closes too, or [`DRAIN_LIMIT`] passes.
async fn read_frames<S: AsyncRead + AsyncWrite + Unpin>(
    sock: S,
    tx: mpsc::UnboundedSender<(Instant, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut r = BufReader::new(sock);
    // `read_until` keeps what it read in `len` when the select drops it, so nothing is lost.
    let mut len = Vec::new();
    let mut drain_until = None;
    loop {
        let got = match drain_until {
            Some(at) => match tokio::time::timeout_at(at, r.read_until(b' ', &mut len)).await {
                Ok(got) => got,
                Err(_) => return,
            },
            None => tokio::select! {
                _ = stop.changed() => {
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
                    let _ = r.get_mut().shutdown().await;
                    continue;
                }
                got = r.read_until(b' ', &mut len) => got,
            },
        };
        match got {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = std::str::from_utf8(&len[..len.len() - 1]).unwrap();
        let n: usize = text
            .parse()
            .unwrap_or_else(|_| panic!("bad octet count {text:?}"));
        len.clear();
        let mut msg = vec![0u8; n];
        if r.read_exact(&mut msg).await.is_err() {
            return;
        }
        if tx
            .send((Instant::now(), String::from_utf8(msg).unwrap()))
            .is_err()
        {
            return;
        }
    }
}
