//! The command line. Spellings here are a contract with users' scripts: add, never rename.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use portcullis_core::policy::parse_approvals;
use portcullis_core::window::parse_window_length;
use portcullis_core::{Access, Criticality, Role, WritePolicy};
use portcullis_net::quic::Congestion;

/// A core type from one of `names`: `--help` and a wrong value list the choices, and the value
/// reaches the command already parsed.
fn one_of<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|name| name.parse::<T>())
}

/// `on` or `off`, as a bool.
fn on_off() -> impl TypedValueParser<Value = bool> {
    PossibleValuesParser::new(["on", "off"]).map(|v| v == "on")
}

/// An IANA time zone name, checked as the web pages will use it.
fn time_zone(name: &str) -> Result<String, String> {
    portcullis_web::pages::check_time_zone(name).map(|()| name.trim().to_owned())
}

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Time-bound vendor remote access for factories"
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every broker command takes (and the vendor's and connector's commands ignore).
#[derive(Debug, Args)]
pub struct Globals {
    /// Where the embedded database, keys and checkpoints live.
    #[arg(long, global = true, env = "PORTCULLIS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://<path> or postgres://user@host/db; default sqlite://<data-dir>/portcullis.db.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// A TOML file with the same settings (flags and environment win over it).
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The broker's own commands, with its data directory and database.
    #[command(flatten)]
    Broker(BrokerCommand),
    /// Site connector, on a machine in the plant's OT zone: enroll it, then run it.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// The vendor's commands (login, devices, request, grants, connect), at the top level.
    #[command(flatten)]
    Vendor(VendorCommand),
}

/// What runs on the broker's machines, against its data directory and database.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Manage users, vendor organisations and the device inventory.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Verify, checkpoint and export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Apply database migrations (run with the database owner's URL).
    Migrate,
    /// Run the broker on one machine: the web service (HTTPS) and the relay (QUIC) in one process.
    Serve(ServeArgs),
    /// Run the web service alone (the relay runs as `portcullis relay`; PostgreSQL).
    Web(WebCommandArgs),
    /// Run the QUIC relay alone (the web service runs as `portcullis web`; PostgreSQL).
    Relay(RelayCommandArgs),
}

/// What a vendor's engineer runs on their own machine, against a broker's API and relay.
#[derive(Debug, Subcommand)]
pub enum VendorCommand {
    /// Vendor: log in to a broker (password, then authenticator code) and keep the session.
    Login(LoginArgs),
    /// Vendor: the devices you may request.
    Devices(ListArgs),
    /// Vendor: end the stored session on the broker and forget it; relay tokens issued
    /// before are refused. With --everywhere, every session of yours and live connections too.
    Logout(LogoutArgs),
    /// Vendor: ask for access to a device's ports for a time window.
    Request(RequestArgs),
    /// Vendor: your requests and grants, with their state and time left.
    Grants(ListArgs),
    /// Vendor: open local ports that reach the granted device through the relay.
    Connect(ConnectArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The broker's web address, e.g. https://broker.plant.example:8443.
    pub broker_url: String,
    /// Account name; asked for when absent.
    #[arg(long)]
    pub username: Option<String>,
    /// PEM file of the CA that signs the broker's certificate (a development broker's
    /// <data-dir>/tls/ca.pem); kept with the session. Default: the public web PKI.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Device name, as `portcullis devices` lists it.
    #[arg(long)]
    pub device: String,
    /// Port or comma-separated ports, e.g. 502 or 502,80.
    #[arg(long = "port", value_name = "P[,P]")]
    pub ports: String,
    /// Window start: RFC 3339, `now`, or from now like +30m, +2h, +1d.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// Window end, in the same forms.
    #[arg(long, value_name = "TIME")]
    pub until: String,
    /// Why you need access (shown to the approvers).
    #[arg(long)]
    pub reason: String,
    /// The plant's ticket or work-order reference.
    #[arg(long)]
    pub ticket: Option<String>,
    /// On the device's Modbus ports: `read` (the default; reading function codes only) or
    /// `write` (writes too, each one recorded with its values).
    #[arg(long, value_parser = one_of::<Access>(&["read", "write"]))]
    pub access: Option<Access>,
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    pub format: OutFormat,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The grant's id, as `portcullis grants` shows it.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    pub grant_id: i64,
    /// Listen on [ADDR:]LOCAL_PORT and carry connections to the granted REMOTE_PORT
    /// (repeatable; LOCAL_PORT 0 picks a free one). Default: one listener per granted port on
    /// 127.0.0.1 with the same number, or a free one when that is taken.
    #[arg(short = 'L', value_name = "[ADDR:]LOCAL_PORT:REMOTE_PORT")]
    pub forward: Vec<String>,
    #[command(flatten)]
    pub quic: QuicArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
}

/// `portcullis web`: the approval service alone (production: PostgreSQL, relay elsewhere).
#[derive(Debug, Args)]
pub struct WebCommandArgs {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
    /// Where vendor clients reach the relay (host:port, UDP), told to them with each token.
    #[arg(long, env = "PORTCULLIS_RELAY_ADDR", default_value = "127.0.0.1:4433")]
    pub relay_addr: String,
}

/// `portcullis relay`: the QUIC relay alone (production: PostgreSQL, web elsewhere).
#[derive(Debug, Args)]
pub struct RelayCommandArgs {
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
    /// The web service's public URL: the issuer of the relay tokens this relay accepts.
    #[arg(long, env = "PORTCULLIS_PUBLIC_URL")]
    pub public_url: String,
    /// The token verification keys as a JWKS file (what the web service publishes at
    /// /api/v1/keys); default: the public halves of the key ring in <data-dir>/keys.
    #[arg(long, env = "PORTCULLIS_JWKS", value_name = "FILE")]
    pub jwks: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics (keep it on loopback or
    /// a management network).
    #[arg(long, env = "PORTCULLIS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address for the HTTPS web service and API.
    #[arg(long, env = "PORTCULLIS_WEB_LISTEN", default_value = "127.0.0.1:8443")]
    pub web_listen: std::net::SocketAddr,
    /// The URL people open (origin for CSRF checks and links); default https://<web-listen>.
    #[arg(long, env = "PORTCULLIS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The plant's time zone for the web pages, e.g. Europe/Berlin.
    #[arg(long, env = "PORTCULLIS_TIME_ZONE", default_value = "UTC", value_parser = time_zone)]
    pub time_zone: String,
    /// System-use notification shown on the login page.
    #[arg(long, env = "PORTCULLIS_BANNER")]
    pub banner: Option<String>,
    /// The plant's name, e.g. "Riverside Bottling": passwords built from it are refused as easy
    /// to guess. Empty: none.
    #[arg(long, env = "PORTCULLIS_PLANT_NAME", default_value = "")]
    pub plant_name: String,
    /// Sign an audit checkpoint into <data-dir>/checkpoints this often when there are new
    /// events, e.g. 1h, or `off`; one is signed at shutdown either way.
    #[arg(long, env = "PORTCULLIS_CHECKPOINT_EVERY", default_value = "1h", value_parser = checkpoint_period)]
    pub checkpoint_every: CheckpointEvery,
}

/// How often the broker signs a checkpoint by itself; `None`: only at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointEvery(pub Option<std::time::Duration>);

/// A checkpoint period: `off`, or at least a minute (more often only fills the directory).
fn checkpoint_period(text: &str) -> Result<CheckpointEvery, String> {
    if text == "off" {
        return Ok(CheckpointEvery(None));
    }
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (or `off`)"))?;
    if d < std::time::Duration::from_secs(60) {
        return Err(format!("{text} is shorter than a minute (or `off`)"));
    }
    Ok(CheckpointEvery(Some(d)))
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// UDP address of the QUIC relay, told to vendor clients.
    #[arg(
        long,
        env = "PORTCULLIS_RELAY_LISTEN",
        default_value = "127.0.0.1:4433"
    )]
    pub relay_listen: std::net::SocketAddr,
    /// This relay's name in the audit log (sessions a crashed relay left open are closed by the
    /// next relay of the same name).
    #[arg(long, env = "PORTCULLIS_RELAY_NAME", default_value = "relay")]
    pub relay_name: String,
    /// Close a tunnelled connection after this long without a byte either way, e.g. 15m.
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Open tunnelled connections one grant may have at once.
    #[arg(long, env = "PORTCULLIS_MAX_STREAMS_PER_GRANT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_grant: u32,
    /// How often live sessions' counters (bytes, open streams, Modbus activity) are written
    /// for the live view, e.g. 2s; one database write per period for all sessions.
    #[arg(long, env = "PORTCULLIS_LIVE_REPORT_EVERY", default_value = "2s", value_parser = report_period)]
    pub live_report_every: std::time::Duration,
    #[command(flatten)]
    pub quic: QuicArgs,
}

/// A live-report period: 100 ms to 1 min (shorter writes the database for nothing, longer makes
/// the live view stale).
fn report_period(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(60) {
        return Err(format!("{text} is outside 100ms..60s"));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain for HTTPS and the relay; default: a development CA and certificate
    /// made in <data-dir>/tls (trust <data-dir>/tls/ca.pem).
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Vendor organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// User accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// The device inventory and per-device policy.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Sites whose devices are reached through the site's connector.
    #[command(subcommand)]
    Site(SiteCommand),
    /// The broker's clock: status, and confirming the time after a clock step.
    #[command(subcommand)]
    Clock(ClockCommand),
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Register a site; prints its one-time connector enrollment token. Devices whose --site
    /// is this name are then reached through the site's connector, never dialed directly.
    Add {
        site: String,
        #[command(flatten)]
        token: SiteTokenArgs,
    },
    /// List sites with their connector's status and certificate.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke a site for good: its connector is cut off at once and cannot enroll again.
    Revoke { site: String },
    /// Print a new one-time enrollment token for a site (e.g. to enroll a replacement
    /// connector; its certificate then replaces the old one).
    Token {
        site: String,
        #[command(flatten)]
        token: SiteTokenArgs,
    },
}

#[derive(Debug, Args)]
pub struct SiteTokenArgs {
    /// The broker's web address, for the printed `portcullis connector enroll` command.
    #[arg(long, env = "PORTCULLIS_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    pub format: OutFormat,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Add a vendor organisation.
    Add { name: String },
    /// List vendor organisations.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints its one-time enrollment code.
    Add {
        username: String,
        #[arg(long, value_parser = one_of::<Role>(&["vendor", "supervisor", "auditor", "admin"]))]
        role: Role,
        /// The vendor's organisation (vendors only).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        contact: ContactArgs,
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
    },
    /// Change an account's e-mail address, time zone or notification settings; options not
    /// given keep their value.
    Set {
        username: String,
        #[command(flatten)]
        contact: ContactArgs,
    },
    /// List accounts.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Disable an account: no more logins or sessions.
    Disable { username: String },
    /// Clear a lockout after failed logins.
    Unlock { username: String },
    /// Reset an account: clears its password and authenticator enrollment, ends its sessions,
    /// relay tokens and live connections, and prints a new one-time enrollment code.
    Reset {
        username: String,
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
    },
}

/// Contact details and notification opt-ins of an account.
#[derive(Debug, Args, Default)]
pub struct ContactArgs {
    /// Where notifications go, e.g. sam@plant.example ('' removes it).
    #[arg(long)]
    pub email: Option<String>,
    /// The IANA time zone of this person's pages and e-mails, e.g. Europe/Berlin ('' goes back
    /// to the plant's).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Hear of every session's start and end (supervisors).
    #[arg(long, value_parser = on_off())]
    pub notify_sessions: Option<bool>,
    /// Receive alerts (admins always do).
    #[arg(long, value_parser = on_off())]
    pub notify_alerts: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device to the inventory with its access policy.
    Add(Box<DeviceAdd>),
    /// List the inventory.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one device.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
    },
    /// Change a device's policy; options not given keep their value.
    SetPolicy(PolicyArgs),
}

#[derive(Debug, Args)]
pub struct DeviceAdd {
    pub name: String,
    /// IP address or host name the relay dials (never taken from a client).
    #[arg(long)]
    pub address: String,
    /// Ports a vendor may ask for, e.g. 502,80.
    #[arg(long)]
    pub ports: String,
    /// e.g. PLC, HMI, engineering workstation.
    #[arg(long = "type")]
    pub device_type: Option<String>,
    /// Site and location, e.g. "Plant 2 / line 3".
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    /// Manufacturer or machine builder.
    #[arg(long)]
    pub vendor: Option<String>,
    #[arg(long)]
    pub purpose: Option<String>,
    /// Data the device handles, e.g. recipes.
    #[arg(long)]
    pub data: Option<String>,
    /// How it is reached, e.g. Modbus/TCP.
    #[arg(long)]
    pub access: Option<String>,
    #[arg(long)]
    pub firmware: Option<String>,
    /// Support contact.
    #[arg(long)]
    pub contact: Option<String>,
    #[arg(long, value_parser = one_of::<Criticality>(&["low", "medium", "high"]), default_value = "medium")]
    pub criticality: Criticality,
    /// Supervisors who must approve: 1, or 2 for dual approval.
    #[arg(long, default_value = "1", value_parser = parse_approvals)]
    pub approvals: u8,
    /// Longest window one request may ask for, e.g. 8h.
    #[arg(long, default_value = "8h", allow_hyphen_values = true, value_parser = parse_window_length)]
    pub max_window: Duration,
    /// Vendor organisations allowed to request it (default: none, deny all).
    #[arg(long)]
    pub orgs: Option<String>,
    #[command(flatten)]
    pub modbus: ModbusPolicyArgs,
}

/// The Modbus part of a device's policy, for `device add` and `device set-policy` (issue 14).
#[derive(Debug, Args)]
pub struct ModbusPolicyArgs {
    /// A port that speaks Modbus/TCP, as PORT=modbus (repeatable, or comma-separated); the
    /// relay enforces each grant's read or write access on it. Other ports stay raw TCP.
    #[arg(long = "protocol", value_name = "PORT=PROTO")]
    pub protocols: Vec<String>,
    /// Whether `write` access may be granted on the Modbus ports: allowed (the default) or
    /// never.
    #[arg(long, value_parser = one_of::<WritePolicy>(&["allowed", "never"]))]
    pub writes: Option<WritePolicy>,
    /// Unit ids granted writes may go to, e.g. 1 or 1,2 (empty or left out: any).
    #[arg(long, value_name = "UNITS")]
    pub write_units: Option<String>,
    /// Holding registers granted writes may go to, e.g. 100-199,300 (empty or left out: any).
    #[arg(long, value_name = "RANGES")]
    pub write_registers: Option<String>,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    pub name: String,
    #[arg(long)]
    pub ports: Option<String>,
    #[arg(long, value_parser = parse_approvals)]
    pub approvals: Option<u8>,
    #[arg(long, allow_hyphen_values = true, value_parser = parse_window_length)]
    pub max_window: Option<Duration>,
    /// Comma-separated organisations; an empty string allows none.
    #[arg(long)]
    pub orgs: Option<String>,
    #[command(flatten)]
    pub modbus: ModbusPolicyArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain, MACs and signed checkpoints. Exit 0 when intact; otherwise
    /// prints "first bad seq: N" and exits 3.
    Verify {
        /// A signed checkpoint to check against (repeatable); those in <data-dir>/checkpoints
        /// are always used.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
    },
    /// Sign the chain head and write it to a file (default <data-dir>/checkpoints/).
    Checkpoint {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write events to stdout (or --out) as CSV or JSON Lines.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the latest events (the last 10, or from --from-seq) and follow new ones as they
    /// are committed, until SIGINT/SIGTERM. JSON lines equal `audit export --format jsonl`'s.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[arg(long, value_enum, default_value_t = TailFormat::Jsonl)]
    pub format: TailFormat,
    /// Start at this seq (inclusive) instead of the last 10 events.
    #[arg(long, value_name = "N")]
    pub from_seq: Option<i64>,
    /// Print what is there and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    Jsonl,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

/// `portcullis connector ...`: what runs on the site connector's machine in the OT zone. It
/// dials out to the relay; nothing connects in.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Enroll this machine as a site's connector (one-time token from `admin site add`).
    Enroll(ConnectorEnrollArgs),
    /// Connect to the relay and carry its dials to the devices the allowlist permits.
    Run(ConnectorRunArgs),
}

#[derive(Debug, Args)]
pub struct ConnectorEnrollArgs {
    /// The broker's web address, e.g. https://broker.plant.example:8443.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_URL")]
    pub url: String,
    /// The one-time enrollment token that `portcullis admin site add` (or `site token`) printed.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_TOKEN", hide_env_values = true)]
    pub token: String,
    /// PEM file of the CA that signs the broker's HTTPS certificate (a development broker's
    /// <data-dir>/tls/ca.pem). Default: the public web PKI.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub dir: ConnectorDir,
    /// Replace an existing enrollment in the state directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ConnectorDir {
    /// The connector's state directory: key, certificate, settings and allowlist.
    #[arg(
        long = "dir",
        env = "PORTCULLIS_CONNECTOR_DIR",
        value_name = "DIR",
        default_value = "/var/lib/portcullis-connector"
    )]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConnectorRunArgs {
    #[command(flatten)]
    pub dir: ConnectorDir,
    /// The allowlist; default <dir>/allowlist.toml. No file: every dial is refused.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_ALLOWLIST", value_name = "FILE")]
    pub allowlist: Option<PathBuf>,
    /// Connect to this relay address instead of the enrolled one (the relay's certificate must
    /// still name the enrolled host).
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: Option<String>,
    /// Enroll first (with --token) when the state directory holds no enrollment yet.
    #[arg(long, env = "PORTCULLIS_CONNECTOR_URL", requires = "token")]
    pub url: Option<String>,
    /// The one-time enrollment token, for enrolling first; unused once enrolled.
    #[arg(
        long,
        env = "PORTCULLIS_CONNECTOR_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    pub token: Option<String>,
    /// For enrolling first: PEM file of the CA that signs the broker's HTTPS certificate.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub quic: QuicArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// End every session of your account (browsers, other machines) and your live
    /// `portcullis connect` sessions, not only this machine's login.
    #[arg(long)]
    pub everywhere: bool,
}

/// The clock monitor's setting (`serve`, `web`, `relay`; issue 12).
#[derive(Debug, Args)]
pub struct ClockArgs {
    /// A step of the wall clock against the monotonic clock beyond this is a clock anomaly: no
    /// new relay tokens or sessions until the clocks agree again or `admin clock ack`.
    #[arg(long, env = "PORTCULLIS_CLOCK_TOLERANCE", default_value = "2s", value_parser = parse_tolerance)]
    pub clock_tolerance: std::time::Duration,
}

fn parse_tolerance(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 2s, 500ms)"))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(3600) {
        return Err("must be between 100ms and 1h".into());
    }
    Ok(d)
}

/// `portcullis admin clock ...`.
#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// Confirm the broker's wall clock as it is now: ends a clock anomaly, so new relay tokens
    /// and sessions start again (grants already ended stay ended). Audited as `clock.ack`.
    Ack,
    /// The latest clock events (anomalies, resolutions, acknowledgements) and this machine's
    /// time synchronisation.
    Status {
        #[arg(long, value_enum, default_value_t = OutFormat::Text)]
        format: OutFormat,
    },
}

/// The QUIC settings of every end that speaks to the relay (or is it): `serve`, `relay`,
/// `connect`, `connector run`.
#[derive(Debug, Args)]
pub struct QuicArgs {
    /// QUIC congestion control for what this end sends (the relay and a site connector: the
    /// vendors' downloads; `connect`: uploads): bbr, cubic or newreno (decision 0018).
    #[arg(
        long,
        env = "PORTCULLIS_CONGESTION",
        default_value = "bbr",
        value_name = "NAME"
    )]
    pub congestion: Congestion,
}
