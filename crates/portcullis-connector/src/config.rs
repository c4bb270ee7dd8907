//! The connector's timings, with the defaults of docs/decisions/0007-site-connectors.md, and the
//! QUIC transport built from them.

use std::sync::Arc;
use std::time::Duration;

use portcullis_net::quic::Congestion;
use quinn::TransportConfig;

/// How fast the connector notices trouble and comes back. Tests shorten these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// One connection attempt (resolve, QUIC handshake, `ConnectorHello`, the relay's first
    /// `Ping`) must finish within this. Default 3 s.
    pub attempt_timeout: Duration,
    /// QUIC keep-alive interval. Default 1 s.
    pub keep_alive: Duration,
    /// QUIC idle timeout (the effective one is the smaller of the two ends'). Default 5 s: a dead
    /// link is noticed within about that.
    pub idle_timeout: Duration,
    /// First reconnect wait (before jitter). Default 250 ms.
    pub backoff_initial: Duration,
    /// Largest reconnect wait (before jitter). Default 2 s.
    pub backoff_max: Duration,
    /// A connection that lasted this long resets the backoff. Default 10 s.
    pub stable_after: Duration,
    /// TCP connect to a device, and the wait for a stream's `Dial` frame. Default 5 s.
    pub dial_timeout: Duration,
    /// The relay pings every 2 s; a relay silent for this long is taken as gone even if QUIC
    /// still answers (its connector handling is stuck) and the connector reconnects. Default 6 s
    /// (three missed pings).
    pub relay_silence: Duration,
    /// On shutdown, how long to wait for the close to reach the relay. Default 1 s.
    pub close_grace: Duration,
    /// The congestion controller of the connector's QUIC connection, which governs what the
    /// connector sends: the device's answers, so the vendor's downloads. Default BBR.
    pub congestion: Congestion,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(2),
            stable_after: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(5),
            relay_silence: Duration::from_secs(6),
            close_grace: Duration::from_secs(1),
            congestion: Congestion::default(),
        }
    }
}

impl ConnectorConfig {
    /// The shared transport (same windows, stream limits and MTU bounds, so memory per
    /// connection is what docs/BENCHMARKS.md describes) with this config's keep-alive and idle
    /// timeout, and its congestion controller.
    pub fn transport(&self) -> Arc<TransportConfig> {
        portcullis_net::quic::transport_config_with(
            self.idle_timeout,
            self.keep_alive,
            self.congestion,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_is_the_shared_one_with_faster_liveness() {
        let shared = format!("{:?}", portcullis_net::quic::transport_config());
        let ours = ConnectorConfig::default().transport();
        let ours_text = format!("{ours:?}");
        assert!(
            ours_text.contains("keep_alive_interval: Some(1s)"),
            "{ours_text}"
        );
        assert!(
            ours_text.contains("max_idle_timeout: Some(5000)"),
            "{ours_text}"
        );
        // Everything else is the same as the shared configuration.
        let normalise = |s: &str| {
            s.replace("keep_alive_interval: Some(1s)", "KA")
                .replace("keep_alive_interval: Some(10s)", "KA")
                .replace("max_idle_timeout: Some(5000)", "IDLE")
                .replace("max_idle_timeout: Some(30000)", "IDLE")
        };
        assert_eq!(normalise(&ours_text), normalise(&shared));
    }
}
