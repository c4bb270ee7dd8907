//! Portcullis credentials.
//!
//! - [`password`]: the password policy (NIST SP 800-63B: length, common and trivial passwords,
//!   no composition rules) and argon2id hashing, verification and the dummy verification that
//!   keeps unknown usernames from being told apart by timing.
//! - [`totp`]: the TOTP second factor (RFC 6238, 30 s, 6 digits, SHA-1): secret generation,
//!   enrollment URI and QR code, code checking against an injected time with a replay guard, and
//!   encryption of secrets at rest (ChaCha20-Poly1305, bound to the username).
//! - [`token`]: relay tokens (EdDSA JWT, RFC 8725): minting, offline verification pinned to
//!   EdDSA with known key ids, binding to the client certificate (RFC 8705 `cnf`), the rotating
//!   signing-key ring and its published JWKS.
//! - [`keyfile`]: 32-byte secret keys kept as files in the data directory (owner-only mode,
//!   created atomically), and the ed25519 signing keys derived from them.
#![forbid(unsafe_code)]

pub mod keyfile;
pub mod password;
pub mod token;
pub mod totp;
