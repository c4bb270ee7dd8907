//! A syslog collector for tests and benchmarks, on loopback: TCP or TLS with octet-counting
//! framing (RFC 6587 / RFC 5425), or UDP. Every message it receives goes to a channel with the
//! instant it arrived. `stop` closes the listener and every connection after reading what the
//! connection had delivered, like a collector shut down cleanly; `restart` listens again on
//! the same port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
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
}

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
                        match &kind {
                            Kind::Tls(config) => {
                                let acceptor = TlsAcceptor::from(config.clone());
                                tokio::spawn(async move {
                                    if let Ok(tls) = acceptor.accept(sock).await {
                                        read_frames(tls, tx, stop).await;
                                    }
                                });
                            }
                            _ => {
                                tokio::spawn(read_frames(sock, tx, stop));
                            }
                        }
                    }
                });
            }
        }
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
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

/// Reads `LEN SP MSG` frames until EOF or `stop`.
async fn read_frames<S: AsyncRead + Unpin>(
    sock: S,
    tx: mpsc::UnboundedSender<(Instant, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut r = BufReader::new(sock);
    loop {
        let mut len = Vec::new();
        let got = tokio::select! {
            _ = stop.changed() => return,
            got = r.read_until(b' ', &mut len) => got,
        };
        match got {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = std::str::from_utf8(&len[..len.len() - 1]).unwrap();
        let n: usize = text
            .parse()
            .unwrap_or_else(|_| panic!("bad octet count {text:?}"));
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
