//! TOTP second factor (RFC 6238): 30-second steps, 6 digits, HMAC-SHA-1, which is what every
//! authenticator app expects.
//!
//! - [`TotpSecret`]: the 160-bit shared secret, generated from the operating system's CSPRNG,
//!   shown once at enrollment as an `otpauth://` URI ([`TotpSecret::otpauth_uri`], rendered as a
//!   QR code by [`qr_svg`]) and as base32 for manual entry ([`TotpSecret::base32`]).
//! - [`check`]: verifies a submitted code against an injected time and the last step the user
//!   already used. It never reads the clock.
//! - [`TotpKey`]: encrypts secrets at rest (ChaCha20-Poly1305) with a key kept in a file outside
//!   the database, bound to the username so a ciphertext copied onto another user's row does not
//!   open.
//!
//! Codes and secrets never appear in error messages or `Debug` output.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::keyfile::{self, KEY_LEN, KeyFileError};

/// Secret length in bytes: 160 bits, the length RFC 4226 recommends (and SECURITY.md's floor).
pub const SECRET_LEN: usize = 20;
/// Length of a time step in seconds.
pub const STEP_SECS: u64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;

/// Prefix of the additional authenticated data of a sealed secret; the username follows.
const AAD_PREFIX: &[u8] = b"portcullis.totp.v1\0";
/// Version prefix of the sealed form, so the format can change without guessing.
const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEALED_LEN: usize = NONCE_LEN + SECRET_LEN + TAG_LEN;

// Steps are handed out as i64 (the database column type); every u64 time divided by the step
// length fits, so the conversions in `check` cannot wrap.
const _: () = assert!(u64::MAX / STEP_SECS <= i64::MAX as u64);

/// Why a code was refused, or a secret could not be made, sealed or opened. No message contains a
/// code, a secret or a ciphertext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    #[error("the authentication code must be exactly {DIGITS} digits")]
    Malformed,
    #[error("the authentication code is wrong or has expired")]
    Mismatch,
    #[error("this authentication code has already been used; wait for the next one")]
    Replayed,
    #[error("could not get random bytes from the operating system: {0}")]
    Random(#[source] rand::Error),
    #[error("the stored TOTP secret is not in the expected sealed format")]
    SealedMalformed,
    #[error(
        "the stored TOTP secret cannot be decrypted: the TOTP key is not the one it was sealed with, it belongs to another user, or it was altered"
    )]
    Decrypt,
    #[error("could not encrypt the TOTP secret")]
    Encrypt,
    #[error(
        "the enrollment link is too long to fit in a QR code; use a shorter issuer or account name"
    )]
    QrTooLong,
}

/// A TOTP shared secret: [`SECRET_LEN`] bytes, wiped from memory on drop, redacted in `Debug`.
/// Deliberately not `Clone`, so copies do not spread.
pub struct TotpSecret {
    bytes: [u8; SECRET_LEN],
}

impl TotpSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, TotpError> {
        let mut secret = Self {
            bytes: [0; SECRET_LEN],
        };
        OsRng
            .try_fill_bytes(&mut secret.bytes)
            .map_err(TotpError::Random)?;
        Ok(secret)
    }

    fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self { bytes }
    }

    /// The secret in unpadded RFC 4648 base32 (32 characters), for typing into an authenticator
    /// app by hand. Show it only on the enrollment page.
    pub fn base32(&self) -> String {
        totp_rs::Secret::new_stack(self.bytes).to_base32()
    }

    /// The `otpauth://totp/` URI that authenticator apps read from a QR code (the de facto "Key
    /// Uri Format"): label `issuer:account`, both percent-encoded, and the parameters `secret`,
    /// `issuer`, `algorithm=SHA1`, `digits=6` and `period=30`. It contains the secret: show it only
    /// on the enrollment page and never log it.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let issuer = percent_encode(issuer);
        format!(
            "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            account = percent_encode(account),
            secret = self.base32(),
        )
    }

    /// Reads a secret typed or scanned as base32 (what [`TotpSecret::base32`] shows).
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_uppercase();
        let secret = totp_rs::Secret::try_from_base32(cleaned).map_err(|_| TotpError::Malformed)?;
        let bytes: [u8; SECRET_LEN] = secret
            .as_ref()
            .try_into()
            .map_err(|_| TotpError::Malformed)?;
        Ok(Self { bytes })
    }

    /// The code an authenticator app shows at `unix_secs`: what a person (or a test) types.
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.code_at_step(unix_secs / STEP_SECS).to_string()
    }

    /// A totp-rs generator for this secret that accepts only the exact step it is asked about
    /// (skew 0): the window policy is ours, in [`check`].
    fn generator(&self) -> totp_rs::Totp {
        // `build_noncompliant` skips validation that cannot fail here: SHA-1, 6 digits, a 30 s
        // step and a 160-bit secret are all RFC-compliant (a test checks that `build` agrees).
        totp_builder(&self.bytes).build_noncompliant()
    }

    /// The code for time step `step`, as 6 ASCII digits (leading zeros kept).
    fn code_at_step(&self, step: u64) -> Zeroizing<String> {
        Zeroizing::new(
            self.generator()
                .generate(step.saturating_mul(STEP_SECS))
                .to_string(),
        )
    }
}

fn totp_builder(secret: &[u8; SECRET_LEN]) -> totp_rs::Builder {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP_SECS)
        .with_skew(0)
        .with_secret(totp_rs::Secret::new_stack(*secret))
}

impl Drop for TotpSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `:`, `/`, `?`, `&`, `#`,
/// spaces and non-ASCII text in an issuer or account name cannot change the URI's structure.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An inline SVG of `uri` as a QR code (error correction level M, with the quiet zone), for the
/// enrollment page. No XML declaration, so it can be embedded in HTML as is. Fails only when the
/// URI is too long for any QR code.
pub fn qr_svg(uri: &str) -> Result<String, TotpError> {
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| TotpError::QrTooLong)?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let svg = svg
        .strip_prefix(r#"<?xml version="1.0" standalone="yes"?>"#)
        .unwrap_or(&svg);
    Ok(svg.replacen(
        "<svg ",
        r#"<svg role="img" aria-label="QR code to scan with an authenticator app" "#,
        1,
    ))
}

/// Checks a submitted TOTP code at time `now_unix_secs` (seconds since the Unix epoch, from the
/// caller's clock: this function never reads one).
///
/// - Surrounding whitespace is trimmed; then exactly 6 ASCII digits are accepted, anything else is
///   [`TotpError::Malformed`].
/// - The code must be the one for the current 30 s step or the previous step (late typing); the
///   next step is not accepted. Both candidates are always computed and compared in constant
///   time.
/// - Returns the matched step. A matched step that is not later than `last_used_step` (the step
///   the user last logged in with) is [`TotpError::Replayed`]: every code works at most once.
///
/// The replay check here only sees the caller's snapshot of `last_used_step`, so it does not stop
/// two requests racing with the same code. The caller must record the returned step atomically
/// and treat losing as a replay:
///
/// ```sql
/// UPDATE users SET totp_last_step = $step
///  WHERE id = $id AND (totp_last_step IS NULL OR totp_last_step < $step)
/// ```
///
/// and accept the login only if exactly one row was updated. Of 20 parallel submissions of one
/// code, exactly one then succeeds.
pub fn check(
    secret: &TotpSecret,
    code: &str,
    now_unix_secs: u64,
    last_used_step: Option<i64>,
) -> Result<i64, TotpError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let current = now_unix_secs / STEP_SECS;
    let previous = current.checked_sub(1);

    let current_ok = secret
        .code_at_step(current)
        .as_bytes()
        .ct_eq(code.as_bytes());
    // At the epoch's first step there is no previous step; compare against the current code
    // again so the work stays the same, and discard the result.
    let previous_ok = secret
        .code_at_step(previous.unwrap_or(current))
        .as_bytes()
        .ct_eq(code.as_bytes())
        & subtle::Choice::from(u8::from(previous.is_some()));

    // Prefer the later step when the code happens to match both (a one-in-a-million chance).
    let matched = if bool::from(current_ok) {
        current
    } else if let (true, Some(previous)) = (bool::from(previous_ok), previous) {
        previous
    } else {
        return Err(TotpError::Mismatch);
    };
    // Cannot wrap: see the const assertion on STEP_SECS above.
    let matched = matched as i64;
    if last_used_step.is_some_and(|last| matched <= last) {
        return Err(TotpError::Replayed);
    }
    Ok(matched)
}

/// The key that encrypts TOTP secrets at rest. It lives in its own file in the data directory
/// (`<data-dir>/keys/totp.key`), never in the database, so a database dump alone reveals no
/// secret. Redacted in `Debug`; wiped on drop.
pub struct TotpKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl TotpKey {
    /// Loads the key file at `path`, creating it first if it does not exist (see
    /// [`keyfile::load_or_create`]).
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self::from_bytes(keyfile::load_or_create(path)?))
    }

    /// Loads the key file at `path`; never creates it.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self::from_bytes(keyfile::load(path)?))
    }

    pub fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { key }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&(*self.key).into())
    }

    /// Encrypts `secret` for the row of user `username`: ChaCha20-Poly1305 with a random 96-bit
    /// nonce and the additional data `"portcullis.totp.v1\0" + username`. Returns
    /// `"v1." + base64url(nonce || ciphertext || tag)` (no padding), 67 characters.
    ///
    /// Random nonces are safe here: a key seals one secret per enrollment, far below the 2^32
    /// messages at which 96-bit random nonces start to risk a collision.
    pub fn seal(&self, secret: &TotpSecret, username: &str) -> Result<String, TotpError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(TotpError::Random)?;
        let aad = aad(username);
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &secret.bytes,
                    aad: &aad,
                },
            )
            .map_err(|_| TotpError::Encrypt)?;
        let mut sealed = Vec::with_capacity(SEALED_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&sealed)
        ))
    }

    /// Decrypts a value made by [`seal`](Self::seal) for the same `username`. Fails with
    /// [`TotpError::SealedMalformed`] when the text is not in the sealed format, and with
    /// [`TotpError::Decrypt`] when the key, the username or any byte differs.
    pub fn open(&self, sealed: &str, username: &str) -> Result<TotpSecret, TotpError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(TotpError::SealedMalformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TotpError::SealedMalformed)?;
        if raw.len() != SEALED_LEN {
            return Err(TotpError::SealedMalformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| TotpError::SealedMalformed)?;
        let aad = aad(username);
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| TotpError::Decrypt)?,
        );
        let bytes =
            <[u8; SECRET_LEN]>::try_from(plaintext.as_slice()).map_err(|_| TotpError::Decrypt)?;
        Ok(TotpSecret::from_bytes(bytes))
    }
}

fn aad(username: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + username.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(username.as_bytes());
    aad
}

impl fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The RFC 6238 appendix B SHA-1 secret.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(*b"12345678901234567890")
    }

    fn key() -> TotpKey {
        TotpKey::from_bytes(Zeroizing::new([7u8; KEY_LEN]))
    }

    #[test]
    fn rfc6238_sha1_vectors_truncated_to_six_digits() {
        // Appendix B lists 8-digit codes (94287082, 07081804, 14050471, 89005924, 69279037);
        // 6-digit codes are their last six digits.
        let secret = rfc_secret();
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let step = check(&secret, code, time, None)
                .unwrap_or_else(|e| panic!("code at {time} refused: {e}"));
            assert_eq!(step, (time / 30) as i64);
        }
    }

    #[test]
    fn generator_parameters_are_rfc_compliant() {
        // `generator` uses build_noncompliant on the strength of this.
        totp_builder(&rfc_secret().bytes).build().unwrap();
    }

    #[test]
    fn previous_step_is_accepted_but_not_the_next_or_older_ones() {
        let secret = rfc_secret();
        // 287082 is the code of step 1 (30..60 s).
        assert_eq!(check(&secret, "287082", 59, None).unwrap(), 1);
        assert_eq!(check(&secret, "287082", 30, None).unwrap(), 1);
        // One step later (60..90 s) it is the previous step: still accepted.
        assert_eq!(check(&secret, "287082", 60, None).unwrap(), 1);
        assert_eq!(check(&secret, "287082", 89, None).unwrap(), 1);
        // Two steps later: too old.
        assert!(matches!(
            check(&secret, "287082", 90, None),
            Err(TotpError::Mismatch)
        ));
        // One step earlier (0..30 s) it would be the next step: refused.
        assert!(matches!(
            check(&secret, "287082", 29, None),
            Err(TotpError::Mismatch)
        ));
        assert!(matches!(
            check(&secret, "287082", 0, None),
            Err(TotpError::Mismatch)
        ));
    }

    #[test]
    fn wrong_code_is_refused() {
        let secret = rfc_secret();
        assert!(matches!(
            check(&secret, "287083", 59, None),
            Err(TotpError::Mismatch)
        ));
        // Another secret's code for the same time.
        let other = TotpSecret::from_bytes([9; SECRET_LEN]);
        assert!(matches!(
            check(&other, "287082", 59, None),
            Err(TotpError::Mismatch)
        ));
    }

    #[test]
    fn a_code_is_accepted_once() {
        let secret = rfc_secret();
        let step = check(&secret, "287082", 59, None).unwrap();
        assert!(matches!(
            check(&secret, "287082", 59, Some(step)),
            Err(TotpError::Replayed)
        ));
        // Still a replay in the next step, where it is the previous step's code.
        assert!(matches!(
            check(&secret, "287082", 65, Some(step)),
            Err(TotpError::Replayed)
        ));
        // After a later step was used, an earlier, still-valid code is refused too.
        assert!(matches!(
            check(&secret, "287082", 65, Some(step + 1)),
            Err(TotpError::Replayed)
        ));
        // A strictly later step is fine.
        assert_eq!(check(&secret, "287082", 59, Some(step - 1)).unwrap(), step);
        assert_eq!(
            TotpError::Replayed.to_string(),
            "this authentication code has already been used; wait for the next one"
        );
    }

    #[test]
    fn malformed_codes_are_refused_before_any_comparison() {
        let secret = rfc_secret();
        for bad in [
            "12345",
            "1234567",
            "abcdef",
            "",
            "      ",
            "28708a",
            "+87082",
            "28 082",
            "２８７０８２",
            "-28708",
        ] {
            assert!(
                matches!(check(&secret, bad, 59, None), Err(TotpError::Malformed)),
                "{bad:?} not refused as malformed"
            );
        }
        assert_eq!(
            TotpError::Malformed.to_string(),
            "the authentication code must be exactly 6 digits"
        );
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let secret = rfc_secret();
        assert_eq!(check(&secret, " 287082\n", 59, None).unwrap(), 1);
        assert_eq!(check(&secret, "\t287082 ", 59, None).unwrap(), 1);
    }

    #[test]
    fn generated_secrets_are_160_bits_and_differ() {
        let a = TotpSecret::generate().unwrap();
        let b = TotpSecret::generate().unwrap();
        assert_eq!(a.bytes.len() * 8, 160);
        assert_ne!(a.bytes, b.bytes);
        assert_ne!(a.bytes, [0; SECRET_LEN]);
    }

    #[test]
    fn base32_is_rfc4648_without_padding() {
        // "12345678901234567890" in base32, as printed by `base32` (coreutils).
        assert_eq!(rfc_secret().base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(TotpSecret::generate().unwrap().base32().len(), 32);
    }

    #[test]
    fn debug_output_is_redacted() {
        let secret = rfc_secret();
        let shown = format!("{secret:?} {:?}", key());
        assert_eq!(shown, "TotpSecret(<redacted>) TotpKey(<redacted>)");
    }

    #[test]
    fn otpauth_uri_has_every_parameter_and_encodes_names() {
        let secret = rfc_secret();
        let uri = secret.otpauth_uri("Portcullis Plant 7", "alice@vendor.example");
        assert_eq!(
            uri,
            "otpauth://totp/Portcullis%20Plant%207:alice%40vendor.example\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Portcullis%20Plant%207\
             &algorithm=SHA1&digits=6&period=30"
        );
        // Characters that would break the label or the query are encoded.
        let uri = secret.otpauth_uri("a:b&c", "x?y#z/é");
        assert!(uri.starts_with("otpauth://totp/a%3Ab%26c:x%3Fy%23z%2F%C3%A9?"));
        assert!(uri.contains("&issuer=a%3Ab%26c&"));
        assert_eq!(uri.matches('?').count(), 1);
        assert_eq!(uri.matches('#').count(), 0);
    }

    #[test]
    fn qr_svg_is_inline_svg_that_depends_on_the_uri() {
        let secret = rfc_secret();
        let uri = secret.otpauth_uri("Portcullis", "alice");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg "), "{}", &svg[..40]);
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<?xml"));
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains("<path"));
        // The secret is in the picture, not in readable text.
        assert!(!svg.contains(&secret.base32()));
        assert_eq!(svg, qr_svg(&uri).unwrap());
        assert_ne!(
            svg,
            qr_svg(&secret.otpauth_uri("Portcullis", "bob")).unwrap()
        );
        assert!(matches!(
            qr_svg(&"x".repeat(5000)),
            Err(TotpError::QrTooLong)
        ));
    }

    #[test]
    fn seal_open_round_trip() {
        let key = key();
        let secret = TotpSecret::generate().unwrap();
        let sealed = key.seal(&secret, "alice").unwrap();
        assert!(sealed.starts_with("v1."));
        assert_eq!(sealed.len(), 3 + 64);
        assert!(!sealed.contains(&secret.base32()));
        let opened = key.open(&sealed, "alice").unwrap();
        assert_eq!(opened.bytes, secret.bytes);
        // A fresh nonce each time.
        assert_ne!(sealed, key.seal(&secret, "alice").unwrap());
    }

    #[test]
    fn a_sealed_secret_does_not_open_for_another_user() {
        let key = key();
        let sealed = key.seal(&rfc_secret(), "alice").unwrap();
        for other in ["bob", "alice ", "Alice", "", "alice\0"] {
            assert!(
                matches!(key.open(&sealed, other), Err(TotpError::Decrypt)),
                "opened for {other:?}"
            );
        }
    }

    #[test]
    fn a_sealed_secret_does_not_open_with_another_key() {
        let sealed = key().seal(&rfc_secret(), "alice").unwrap();
        let other = TotpKey::from_bytes(Zeroizing::new([8u8; KEY_LEN]));
        assert!(matches!(
            other.open(&sealed, "alice"),
            Err(TotpError::Decrypt)
        ));
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let key = key();
        let sealed = key.seal(&rfc_secret(), "alice").unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, NONCE_LEN + 5, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let bad = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bad));
            assert!(
                matches!(key.open(&bad, "alice"), Err(TotpError::Decrypt)),
                "flipped byte {i} accepted"
            );
        }
    }

    #[test]
    fn malformed_sealed_values_are_refused() {
        let key = key();
        let sealed = key.seal(&rfc_secret(), "alice").unwrap();
        let bads = [
            String::new(),
            "v1.".to_owned(),
            format!("v2.{}", &sealed[3..]),
            sealed[3..].to_owned(),
            sealed[..sealed.len() - 2].to_owned(),
            format!("{sealed}AA"),
            sealed.replace('.', "!"),
            format!("{sealed}="),
        ];
        for bad in bads {
            assert!(
                matches!(key.open(&bad, "alice"), Err(TotpError::SealedMalformed)),
                "{bad:?} not refused as malformed"
            );
        }
    }

    #[test]
    fn key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("totp.key");
        let sealed = TotpKey::load_or_create(&path)
            .unwrap()
            .seal(&rfc_secret(), "alice")
            .unwrap();
        let opened = TotpKey::load(&path)
            .unwrap()
            .open(&sealed, "alice")
            .unwrap();
        assert_eq!(opened.bytes, rfc_secret().bytes);
    }

    #[test]
    fn error_messages_never_contain_the_code() {
        let secret = rfc_secret();
        for code in ["287082", "123456", "28708"] {
            if let Err(err) = check(&secret, code, 59, Some(1)) {
                assert!(!err.to_string().contains(code), "{err}");
            }
        }
    }
}
