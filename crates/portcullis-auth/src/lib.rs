//! Portcullis credentials.
//!
//! - [`password`]: the password policy (NIST SP 800-63B: length, common and trivial passwords,
//!   no composition rules) and argon2id hashing, verification and the dummy verification that
//!   keeps unknown usernames from being told apart by timing.
//! - [`keyfile`]: 32-byte secret keys kept as files in the data directory (owner-only mode,
//!   created atomically), and the ed25519 signing keys derived from them.
//!
//! TOTP secrets and relay tokens will live here too.
#![forbid(unsafe_code)]

pub mod keyfile;
pub mod password;
