//! The relay test world: a real store (SQLite) on a manual clock, a relay on loopback QUIC, a
//! token signer, an echo device, and helpers to connect, open streams and read the audit log.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub use std::collections::BTreeSet;
pub use std::net::SocketAddr;
pub use std::sync::Arc;
pub use std::time::Duration;

pub use portcullis_auth::token::{TokenSigner, TokenVerifier, thumbprint};
pub use portcullis_core::audit::{ActorRole, MacKey};
pub use portcullis_core::request::Narrowing;
pub use portcullis_core::wire::{self, EndReason, Frame, FrameDecoder, RefusalCode, Token};
pub use portcullis_core::{
    Criticality, Device, DeviceName, DevicePolicy, DeviceProfile, NetworkAddress, OrgName, Port,
    Role, Timestamp, Username, Window,
};
pub use portcullis_net::{devca, quic};
pub use portcullis_relay::{Relay, RelayConfig};
pub use portcullis_store::{
    AuditActor, AuditQuery, NewRequest, NewUser, Store, StoreConfig, UserRecord,
};
pub use portcullis_testkit::devices::EchoDevice;
pub use portcullis_testkit::{ManualClock, TestDb};
pub use quinn::{Connection, Endpoint, RecvStream, SendStream};
pub use tokio::time::Instant;

pub const T0: &str = "2026-11-25T08:00:00Z";
pub const ISSUER: &str = "https://broker.test";
pub const AUDIENCE: &str = "portcullis-relay";

pub struct World {
    pub _dir: tempfile::TempDir,
    pub _db: TestDb,
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub signer: TokenSigner,
    pub relay_addr: SocketAddr,
    pub relay: Relay,
    pub ca: std::path::PathBuf,
    pub vera: UserRecord,
    pub sam: UserRecord,
    pub device: EchoDevice,
    pub stop: tokio_util::sync::CancellationToken,
}

pub fn admin() -> AuditActor {
    AuditActor {
        name: "cli:root".into(),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

pub fn at(offset_secs: i64) -> Timestamp {
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    Timestamp::from_unix_micros(t0.unix_micros() + offset_secs * 1_000_000).unwrap()
}

pub async fn world(config: RelayConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite_in(dir.path());
    world_in(dir, db, None, config).await
}

/// The world on `db`, reached at `url` when given (a proxy in front of it).
pub async fn world_in(
    dir: tempfile::TempDir,
    db: TestDb,
    url: Option<&str>,
    config: RelayConfig,
) -> World {
    let clock = Arc::new(ManualClock::at(T0));
    let mut sc = StoreConfig::new(MacKey::new([7; 32]));
    sc.clock = clock.clone();
    let store = Store::open(url.unwrap_or(db.url()), sc).await.unwrap();
    store
        .add_org(&admin(), &OrgName::parse("acme").unwrap())
        .await
        .unwrap();
    let device = EchoDevice::start().await;
    let port = device.addr().port();
    let user = |name: &str, role: Role| NewUser {
        username: Username::parse(name).unwrap(),
        role,
        org: (role == Role::Vendor).then(|| OrgName::parse("acme").unwrap()),
    };
    let (vera, _) = store
        .add_user(&admin(), &user("vera", Role::Vendor))
        .await
        .unwrap();
    let (sam, _) = store
        .add_user(&admin(), &user("sam", Role::Supervisor))
        .await
        .unwrap();
    // 1 is a port nothing listens on: granted-but-closed and not-granted are told apart.
    let ports: BTreeSet<Port> = [Port::new(u32::from(port)).unwrap(), Port::new(1).unwrap()].into();
    let d = Device {
        name: DeviceName::parse("plc-7").unwrap(),
        address: NetworkAddress::parse("127.0.0.1").unwrap(),
        criticality: Criticality::High,
        profile: DeviceProfile::default(),
        policy: DevicePolicy::new(
            ports,
            Duration::from_secs(8 * 3600),
            1,
            BTreeSet::from([OrgName::parse("acme").unwrap()]),
        )
        .unwrap(),
    };
    store.add_device(&admin(), &d).await.unwrap();
    // The same echo device once more, as plc-9 at site plant-2: behind a site connector once the
    // site is registered (connector tests), dialed directly otherwise.
    let behind = Device {
        name: DeviceName::parse("plc-9").unwrap(),
        profile: DeviceProfile {
            site: "plant-2".into(),
            ..DeviceProfile::default()
        },
        ..d
    };
    store.add_device(&admin(), &behind).await.unwrap();

    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let signer = TokenSigner::new("k1", key, ISSUER, AUDIENCE);
    let mut verifier = TokenVerifier::new(ISSUER, AUDIENCE);
    verifier.add_key("k1", &signer.verifying_key());

    let files = devca::ensure_dev_pki(&dir.path().join("tls"), &["127.0.0.1".into()]).unwrap();
    let (certs, pkey) = portcullis_net::load_certified_key(&files.cert, &files.key).unwrap();
    let server =
        quic::relay_server_config(certs, pkey, &[wire::ALPN, wire::CONNECTOR_ALPN]).unwrap();
    let endpoint = Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let relay_addr = endpoint.local_addr().unwrap();
    let relay = Relay::new(store.clone(), verifier, clock.clone(), config);
    let stop = tokio_util::sync::CancellationToken::new();
    let (r, s) = (relay.clone(), stop.clone());
    tokio::spawn(async move { r.run(endpoint, s.cancelled_owned()).await.unwrap() });
    World {
        _dir: dir,
        _db: db,
        store,
        clock,
        signer,
        relay_addr,
        relay,
        ca: files.ca_cert,
        vera,
        sam,
        device,
        stop,
    }
}

impl World {
    pub fn port(&self) -> u16 {
        self.device.addr().port()
    }

    /// Vera asks for plc-7 over `[start, end]` (seconds from T0); Sam approves.
    pub async fn grant(&self, start: i64, end: i64) -> i64 {
        self.grant_for("plc-7", start, end).await
    }

    /// Vera asks for `device` over `[start, end]` (seconds from T0); Sam approves.
    pub async fn grant_for(&self, device: &str, start: i64, end: i64) -> i64 {
        let req = NewRequest {
            device: DeviceName::parse(device).unwrap(),
            ports: [
                Port::new(u32::from(self.port())).unwrap(),
                Port::new(1).unwrap(),
            ]
            .into(),
            window: Window::new(at(start), at(end)).unwrap(),
            reason: "firmware check".into(),
            ticket: None,
            access: None,
        };
        let as_user = |u: &UserRecord| AuditActor {
            name: u.username.to_string(),
            role: u.role.into(),
            source: Some("127.0.0.1".into()),
        };
        let rec = self
            .store
            .create_request(&as_user(&self.vera), &self.vera, &req)
            .await
            .unwrap();
        self.store
            .approve_request(
                &as_user(&self.sam),
                &self.sam,
                rec.id,
                &Narrowing::default(),
            )
            .await
            .unwrap();
        rec.id
    }

    pub fn now(&self) -> portcullis_core::Timestamp {
        portcullis_core::Clock::now(&*self.clock)
    }

    /// A relay token for `grant`, vera's, bound to `thumb`, good for 5 minutes.
    pub fn token(&self, signer: &TokenSigner, grant: i64, thumb: &str) -> String {
        let vera = portcullis_core::Username::parse("vera").unwrap();
        let five_min = std::time::Duration::from_secs(300);
        let (token, _) = signer
            .mint(
                &vera,
                portcullis_core::GrantId::new(grant),
                thumb,
                self.now(),
                five_min,
                portcullis_core::Timestamp::MAX,
            )
            .unwrap();
        token
    }

    /// A client with a fresh key, and a token for `grant` bound to it.
    pub fn client(&self, grant: i64) -> Client {
        let (cert, key) = devca::ephemeral_client_identity("vera").unwrap();
        let thumb = thumbprint(cert.as_ref());
        let token = self.token(&self.signer, grant, &thumb);
        Client {
            config: quic::client_config(&self.ca, cert, key, &[wire::ALPN]).unwrap(),
            token,
        }
    }

    pub async fn connect(&self, c: &Client) -> Connection {
        let mut ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(c.config.clone());
        ep.connect(self.relay_addr, "127.0.0.1")
            .unwrap()
            .await
            .unwrap()
    }

    /// Connects and sends `Hello`; returns the relay's answer on the control stream.
    pub async fn hello(
        &self,
        c: &Client,
    ) -> (Connection, SendStream, RecvStream, FrameDecoder, Frame) {
        let conn = self.connect(c).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Frame::Hello {
            version: wire::VERSION,
            token: Token::new(c.token.clone()),
        };
        send.write_all(&hello.to_vec().unwrap()).await.unwrap();
        let mut dec = FrameDecoder::new();
        let answer = read_frame(&mut recv, &mut dec).await.expect("an answer");
        (conn, send, recv, dec, answer)
    }

    pub async fn audit(&self, action: &str) -> Vec<serde_json::Value> {
        let events = self
            .store
            .audit_events(&AuditQuery::default())
            .await
            .unwrap();
        events
            .into_iter()
            .filter(|e| e.action == action)
            .map(|e| {
                serde_json::json!({
                    "action": e.action, "actor": e.actor, "grant": e.grant_id,
                    "details": serde_json::from_str::<serde_json::Value>(&e.details).unwrap(),
                })
            })
            .collect()
    }
}

impl World {
    /// Waits until the log holds `n` events with `action` (the relay writes session ends after
    /// it has closed everything) and returns them.
    pub async fn wait_audit(&self, action: &str, n: usize) -> Vec<serde_json::Value> {
        loop {
            let events = self.audit(action).await;
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Client {
    pub config: quinn::ClientConfig,
    pub token: String,
}

/// The next frame; `None` when the stream ended, was reset or failed (what tests wait for).
pub async fn read_frame(recv: &mut RecvStream, dec: &mut FrameDecoder) -> Option<Frame> {
    match portcullis_net::frames::read_frame(recv, dec).await {
        Ok(f) => f,
        Err(portcullis_net::frames::FrameError::Wire(e)) => panic!("malformed frame: {e}"),
        Err(_) => None,
    }
}

/// Opens a data stream for `device:port`; returns the relay's answer and the stream.
pub async fn open(conn: &Connection, device: &str, port: u16) -> (Frame, SendStream, RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let open = Frame::Open {
        device: device.into(),
        port,
    };
    send.write_all(&open.to_vec().unwrap()).await.unwrap();
    let mut dec = FrameDecoder::new();
    let f = read_frame(&mut recv, &mut dec).await.expect("an answer");
    assert!(dec.buffered().is_empty());
    (f, send, recv)
}

pub fn refused(f: &Frame) -> RefusalCode {
    match f {
        Frame::Refused { code, .. } => *code,
        other => panic!("expected Refused, got {other:?}"),
    }
}
