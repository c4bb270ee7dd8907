//! [`HttpDevice`]: a tiny HTTP/1.1 server (hyper) standing in for a device's web UI, enough for
//! a real HTTP client to fetch through a tunnel.
//!
//! - `GET /status` -> 200, `application/json`:
//!   `{"device":"portcullis-test-device","requests":N,"status":"ok"}` (N counts this request).
//! - `GET <any other path>` -> 200, `text/plain`, body [`http_body`]`(path)`.
//! - Any other method -> 405.
//!
//! Keep-alive works as in hyper; each TCP connection is one [`Device`] connection.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{Conn, Device};

/// The first line of every text page the device serves.
pub const HTTP_BANNER: &str = "portcullis test device";

/// The exact body of `GET <path>` (not `/status`): the banner, then the path, each on a line.
pub fn http_body(path: &str) -> String {
    format!("{HTTP_BANNER}\n{path}\n")
}

/// The HTTP simulator; derefs to its [`Device`] bookkeeping.
#[derive(Debug)]
pub struct HttpDevice {
    device: Device,
    requests: Arc<AtomicU64>,
}

impl HttpDevice {
    /// Starts an HTTP device on `127.0.0.1:0`.
    pub async fn start() -> HttpDevice {
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let device = Device::start_with(move |conn| serve(conn, Arc::clone(&counter))).await;
        HttpDevice { device, requests }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.device.addr())
    }

    /// Requests served so far, over all connections.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Deref for HttpDevice {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.device
    }
}

async fn serve(conn: Conn, requests: Arc<AtomicU64>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok::<_, Infallible>(respond(&req, n)))
    });
    // Errors (a client that vanished mid-request) just end the connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .await;
}

fn respond(req: &Request<Incoming>, n: u64) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/status") => (
            StatusCode::OK,
            "application/json",
            serde_json::json!({"status": "ok", "device": "portcullis-test-device", "requests": n})
                .to_string(),
        ),
        (&Method::GET | &Method::HEAD, path) => (StatusCode::OK, "text/plain", http_body(path)),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn a_real_client_fetches_pages_and_status() {
        let dev = HttpDevice::start().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        let resp = client
            .get(format!("{}/", dev.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), http_body("/"));

        let page = client
            .get(format!("{}/plc/line-3", dev.base_url()))
            .send()
            .await;
        assert_eq!(
            page.unwrap().text().await.unwrap(),
            http_body("/plc/line-3")
        );

        let status: serde_json::Value = client
            .get(format!("{}/status", dev.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["status"], "ok");
        assert_eq!(status["requests"], 3);
        assert_eq!(dev.requests(), 3);

        let post = client.post(dev.base_url()).send().await.unwrap();
        assert_eq!(post.status(), 405);
        // reqwest keeps its connections alive (usually one; its pool may race to open another).
        assert!(dev.accepted() >= 1);
        drop(client);
        dev.wait_open(0).await;
        assert!(dev.next_close().await.bytes_out > 0);
    }

    #[tokio::test]
    async fn answers_a_raw_request() {
        let dev = HttpDevice::start().await;
        let mut c = TcpStream::connect(dev.addr()).await.unwrap();
        let req = b"GET / HTTP/1.1\r\nHost: device\r\nConnection: close\r\n\r\n";
        c.write_all(req).await.unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(
            raw.ends_with(&format!("\r\n\r\n{}", http_body("/"))),
            "{raw}"
        );

        let ev = dev.next_close().await;
        assert_eq!(ev.bytes_in, req.len() as u64);
        assert_eq!(ev.bytes_out, raw.len() as u64);
    }
}
