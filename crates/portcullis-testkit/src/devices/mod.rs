//! Device simulators for end-to-end tests: small TCP servers on `127.0.0.1:0` that stand in for
//! the factory devices Portcullis tunnels to.
//!
//! - [`EchoDevice`]: echoes every byte (half-close aware), for byte-exactness and throughput.
//! - [`HttpDevice`]: a tiny HTTP/1.1 server (`GET /`, `GET /status`), for a device web UI.
//! - [`ModbusDevice`]: a Modbus/TCP server with shared registers and coils, for a PLC.
//!
//! Each derefs to a [`Device`], the bookkeeping they share: how many connections the device
//! ever accepted (so a test can assert "the device never saw a connection"), how many are open,
//! and a queue of [`CloseEvent`]s (so an enforcement test can await "the device side saw the
//! close" and when). [`Device::start_with`] builds a custom simulator from a connection handler.
//! Dropping a device stops it: its listener and every open connection are closed.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

mod echo;
mod http;
mod modbus;

pub use echo::EchoDevice;
pub use http::{HTTP_BANNER, HttpDevice, http_body};
pub use modbus::{MODBUS_SIZE, ModbusDevice};

/// One connection the device saw end: observed after the device's socket was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseEvent {
    /// The client's address as the device saw it.
    pub peer: SocketAddr,
    /// When the device accepted the connection.
    pub opened: Instant,
    /// When the device closed its side (after it read EOF or an error, or finished).
    pub at: Instant,
    /// Bytes the device read from the connection.
    pub bytes_in: u64,
    /// Bytes the device wrote to the connection.
    pub bytes_out: u64,
    /// The connection ended with an RST (a read failed with "connection reset"), not a FIN.
    pub reset: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    accepted: usize,
    open: usize,
}

#[derive(Debug)]
struct Shared {
    counts: watch::Sender<Counts>,
    closes: mpsc::UnboundedSender<CloseEvent>,
}

impl Shared {
    /// Counts a freshly accepted connection and wraps it.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> Conn {
        // Small request/response exchanges must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.counts.send_modify(|c| {
            c.accepted += 1;
            c.open += 1;
        });
        Conn {
            inner: stream,
            guard: CloseGuard {
                shared: Arc::clone(self),
                peer,
                opened: Instant::now(),
                bytes_in: 0,
                bytes_out: 0,
                reset: false,
            },
        }
    }
}

/// Reports the close when dropped: declared after the socket in [`Conn`], so the socket is
/// already closed by then.
#[derive(Debug)]
struct CloseGuard {
    shared: Arc<Shared>,
    peer: SocketAddr,
    opened: Instant,
    bytes_in: u64,
    bytes_out: u64,
    reset: bool,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let at = Instant::now();
        // `open` drops before the event is queued: after `next_close`, `open()` is current.
        self.shared.counts.send_modify(|c| c.open -= 1);
        let _ = self.shared.closes.send(CloseEvent {
            peer: self.peer,
            opened: self.opened,
            at,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            reset: self.reset,
        });
    }
}

/// A connection accepted by a [`Device`]: a [`TcpStream`] that counts its bytes and reports a
/// [`CloseEvent`] when dropped.
#[derive(Debug)]
pub struct Conn {
    inner: TcpStream,
    guard: CloseGuard,
}

impl Conn {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.guard.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => this.guard.bytes_in += (buf.filled().len() - before) as u64,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                this.guard.reset = true;
            }
            _ => {}
        }
        res
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.guard.bytes_out += n as u64;
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.guard.bytes_out += n as u64;
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn loopback_listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port for a device simulator")
}

/// A running device simulator: its address and what it saw. Dropping it stops the device.
#[derive(Debug)]
pub struct Device {
    addr: SocketAddr,
    shared: Arc<Shared>,
    closes: Mutex<mpsc::UnboundedReceiver<CloseEvent>>,
    task: JoinHandle<()>,
}

impl Device {
    /// Starts a device on `127.0.0.1:0` that runs `handler` on each accepted connection, each
    /// in its own task. The connection counts as closed when the handler drops it.
    pub async fn start_with<F, Fut>(handler: F) -> Device
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::spawn(loopback_listener().await, move |listener, shared| {
            accept_loop(listener, shared, handler)
        })
        .await
    }

    /// Runs `run` on `listener` in a task that `Drop` aborts.
    async fn spawn<F, Fut>(listener: TcpListener, run: F) -> Device
    where
        F: FnOnce(TcpListener, Arc<Shared>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("device listener address");
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            counts: watch::Sender::new(Counts::default()),
            closes: tx,
        });
        let task = tokio::spawn(run(listener, Arc::clone(&shared)));
        Device {
            addr,
            shared,
            closes: Mutex::new(rx),
            task,
        }
    }

    /// Where the device listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections the device ever accepted.
    pub fn accepted(&self) -> usize {
        self.shared.counts.borrow().accepted
    }

    /// Connections currently open on the device.
    pub fn open(&self) -> usize {
        self.shared.counts.borrow().open
    }

    /// Waits until the device has accepted at least `n` connections.
    pub async fn wait_accepted(&self, n: usize) {
        let mut rx = self.shared.counts.subscribe();
        let _ = rx.wait_for(|c| c.accepted >= n).await;
    }

    /// Waits until exactly `n` connections are open on the device.
    pub async fn wait_open(&self, n: usize) {
        let mut rx = self.shared.counts.subscribe();
        let _ = rx.wait_for(|c| c.open == n).await;
    }

    /// Waits for the next connection close, in the order they happened. Waits forever when no
    /// connection closes: wrap it in `tokio::time::timeout`.
    pub async fn next_close(&self) -> CloseEvent {
        self.closes
            .lock()
            .await
            .recv()
            .await
            .expect("the device holds its own close sender")
    }

    /// The next close already observed, if any, without waiting (`None` too while another task
    /// is awaiting [`next_close`](Self::next_close)).
    pub fn try_next_close(&self) -> Option<CloseEvent> {
        self.closes.try_lock().ok()?.try_recv().ok()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Aborting the accept task drops its listener and its `JoinSet` of connections.
        self.task.abort();
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, shared: Arc<Shared>, handler: F)
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Accept errors (e.g. out of file descriptors) are transient: keep listening.
                if let Ok((stream, peer)) = accepted {
                    conns.spawn(handler(shared.admit(stream, peer)));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn custom_devices_count_connections_and_report_closes() {
        let dev = Device::start_with(|mut conn: Conn| async move {
            conn.write_all(b"hello").await.unwrap();
        })
        .await;
        assert_eq!(dev.accepted(), 0, "nothing connected yet");
        assert_eq!(dev.try_next_close(), None);

        let mut c = TcpStream::connect(dev.addr()).await.unwrap();
        let local = c.local_addr().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");

        let ev = dev.next_close().await;
        assert_eq!(ev.peer, local);
        assert_eq!((ev.bytes_in, ev.bytes_out), (0, 5));
        assert!(ev.opened <= ev.at);
        assert_eq!((dev.accepted(), dev.open()), (1, 0));
    }

    #[tokio::test]
    async fn wait_open_follows_live_connections() {
        let dev = Device::start_with(|mut conn: Conn| async move {
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink).await;
        })
        .await;
        let a = TcpStream::connect(dev.addr()).await.unwrap();
        let b = TcpStream::connect(dev.addr()).await.unwrap();
        dev.wait_accepted(2).await;
        dev.wait_open(2).await;
        drop(a);
        dev.wait_open(1).await;
        drop(b);
        dev.next_close().await;
        dev.next_close().await;
        assert_eq!((dev.accepted(), dev.open()), (2, 0));
    }

    #[tokio::test]
    async fn dropping_the_device_stops_it() {
        let dev = Device::start_with(|_conn: Conn| async {}).await;
        let addr = dev.addr();
        drop(dev);
        // The abort lands on the runtime's next turn: wait for the event, bounded.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the listener closes after the device is dropped");
    }
}
