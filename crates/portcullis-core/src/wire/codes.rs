//! Refusal codes and end reasons: one byte on the wire, a stable snake_case name in the audit log.

use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

/// Defines a one-byte code enum with its wire numbers and audit names in one table, so the two
/// can never drift apart. Numbers not in the table decode to `Unknown(n)` instead of failing the
/// whole frame: a newer relay may add a code, and an older client should still show the message
/// that came with it rather than a protocol error.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A number this build does not know, as received from a (newer) peer. Never sent by
            /// this build; `Unknown(n)` with a number from the table encodes as that known code.
            Unknown(u8),
        }

        impl $name {
            /// Every known value, in wire-number order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The value of wire number `code`; unassigned numbers (including 0) give `Unknown`.
            pub fn from_code(code: u8) -> Self {
                match code {
                    $( $code => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }

            /// The wire number.
            pub fn code(self) -> u8 {
                match self {
                    $( $name::$variant => $code, )+
                    $name::Unknown(code) => code,
                }
            }

            /// Stable snake_case name, as written to the audit log. `Unknown` gives `"unknown"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::Unknown(code) => write!(f, "unknown {} {code}", $what),
                    known => f.write_str(known.as_str()),
                }
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            /// Parses a known name (as stored in the audit log); `unknown` is not accepted
            /// because it lost its number.
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s.trim())
                    .ok_or_else(|| ValidationError::new($what, format!("'{s}' is not a known {}", $what)))
            }
        }
    };
}

wire_code! {
    /// Why the relay (or a connector) refused a handshake or a stream. Sent in `Refused`.
    RefusalCode, "refusal code" {
        /// The `Hello` version (or the ALPN) is not one this relay speaks.
        BadVersion = 1, "bad_version";
        /// The token is malformed, has a bad signature, an unknown `kid`, the wrong `aud`, `iss`
        /// or token type, or was already used.
        BadToken = 2, "bad_token";
        /// The token's `exp` has passed (or its `nbf` has not come yet).
        TokenExpired = 3, "token_expired";
        /// The token's `cnf` thumbprint is not the SHA-256 of this connection's client certificate.
        BindingMismatch = 4, "binding_mismatch";
        /// The grant is not approved any more (revoked, expired, user disabled) in the store.
        GrantInactive = 5, "grant_inactive";
        /// The grant is approved but now is outside its window.
        NotInWindow = 6, "not_in_window";
        /// The requested device/port pair is not in the grant. Nothing was dialed.
        TargetNotGranted = 7, "target_not_granted";
        /// The grant already has its maximum number of concurrent streams.
        ConnectionLimit = 8, "connection_limit";
        /// The audit log cannot be written, so nothing new starts (fail closed).
        AuditUnavailable = 9, "audit_unavailable";
        /// The device refused or reset the TCP connection, or its address did not resolve.
        DialFailed = 10, "dial_failed";
        /// The device did not answer the TCP connection attempt in time.
        DialTimeout = 11, "dial_timeout";
        /// The device sits behind a site connector that is not connected.
        ConnectorOffline = 12, "connector_offline";
        /// The site connector refused the dial (its own allow-list or policy).
        ConnectorRefused = 13, "connector_refused";
        /// Something failed inside the relay; the details are in its log, not on the wire.
        Internal = 14, "internal";
        /// The broker's wall clock stepped against its monotonic clock: nothing new starts until
        /// the clocks agree again or an admin acknowledges (fail closed).
        ClockAnomaly = 15, "clock_anomaly";
        /// The token was issued before its user logged out (or logged out everywhere, or had
        /// the password or enrollment reset): it is void.
        SessionRevoked = 16, "session_revoked";
    }
}

wire_code! {
    /// Why a session (or one stream of it) ended. Sent in `Ending`, and written to the audit log
    /// for every session and stream end, including ends that no frame announces.
    EndReason, "end reason" {
        /// The grant's window is over.
        WindowEnd = 1, "window_end";
        /// A supervisor revoked the grant.
        Revoked = 2, "revoked";
        /// The vendor's account was disabled.
        UserDisabled = 3, "user_disabled";
        /// The device's policy or the grant's ports changed so that this session is not allowed.
        PolicyChanged = 4, "policy_changed";
        /// No bytes moved for longer than the idle timeout.
        IdleTimeout = 5, "idle_timeout";
        /// The relay is shutting down (SIGTERM).
        Shutdown = 6, "shutdown";
        /// The relay restarted and closed, in the audit log, sessions left open by a crash.
        /// Audit only: the connection is already gone, so no frame carries it.
        RelayRestart = 7, "relay_restart";
        /// The audit log cannot be written. The design keeps live sessions running to their
        /// window end in that case (only new ones are refused), so the relay does not normally
        /// send it; it exists so that a policy that does end them has a name for it.
        AuditUnavailable = 8, "audit_unavailable";
        /// The vendor's client closed the session or stream. Audit only.
        ClientClosed = 9, "client_closed";
        /// The device closed its TCP connection. Audit only (per stream).
        DeviceClosed = 10, "device_closed";
        /// The site connector carrying the session's streams went away.
        ConnectorLost = 11, "connector_lost";
        /// The vendor logged out everywhere, or had the password or enrollment reset.
        SessionRevoked = 12, "session_revoked";
        /// A supervisor ended this one session (the grant stays approved: the vendor may
        /// connect again). The `Ending` message carries who and why.
        EndedBySupervisor = 13, "ended_by_supervisor";
    }
}
