//! [`EchoDevice`]: writes back every byte it reads. For byte-exact and throughput tests through
//! a tunnel, and for half-close: after the client's EOF it finishes echoing, then shuts down
//! its write side, so the client reads everything and then EOF.

use std::ops::Deref;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Conn, Device};

/// The echo simulator; derefs to its [`Device`] bookkeeping.
#[derive(Debug)]
pub struct EchoDevice(Device);

impl EchoDevice {
    /// Starts an echo device on `127.0.0.1:0`.
    pub async fn start() -> EchoDevice {
        EchoDevice(Device::start_with(echo).await)
    }
}

impl Deref for EchoDevice {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.0
    }
}

async fn echo(mut conn: Conn) {
    // One 64 KiB buffer per connection: large transfers cost no allocation per read.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => {
                let _ = conn.shutdown().await;
                return;
            }
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn echoes_byte_exact_and_honours_half_close() {
        let dev = EchoDevice::start().await;
        // Every byte value, in a pattern that a misplaced or dropped chunk would break.
        let data: Vec<u8> = (0..4 * 1024 * 1024u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let c = TcpStream::connect(dev.addr()).await.unwrap();
        let (mut rd, mut wr) = c.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.shutdown().await.unwrap(); // half-close: we still read
            wr
        });
        let mut got = Vec::with_capacity(data.len());
        rd.read_to_end(&mut got).await.unwrap(); // EOF only after the device shut down
        let _wr = writer.await.unwrap();
        assert!(
            got == data,
            "echo differs ({} of {} bytes)",
            got.len(),
            data.len()
        );

        let ev = dev.next_close().await;
        let len = data.len() as u64;
        assert_eq!((ev.bytes_in, ev.bytes_out), (len, len));
        assert_eq!((dev.accepted(), dev.open()), (1, 0));
    }

    #[tokio::test]
    async fn a_reset_client_is_a_close() {
        let dev = EchoDevice::start().await;
        let mut c = TcpStream::connect(dev.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        c.set_zero_linger().unwrap();
        drop(c);
        let ev = dev.next_close().await;
        assert_eq!((ev.bytes_in, ev.bytes_out), (4, 4));
    }
}
