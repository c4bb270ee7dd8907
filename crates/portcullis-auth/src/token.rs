//! Relay tokens: short-lived JWTs (RFC 7519) signed with Ed25519 (`EdDSA`), bound to the client's
//! QUIC certificate (RFC 8705 `cnf` / `x5t#S256`), minted by the web service for one approved
//! grant and verified offline by the relay.
//!
//! Verification follows RFC 8725 (JWT best current practice):
//! - the algorithm is pinned to EdDSA before anything else is looked at: `none`, HMAC (including
//!   HS256 keyed with the Ed25519 public key) and RSA tokens are refused;
//! - the key is chosen only by `kid` from keys we already hold; `jku`, `x5u`, `jwk` and `x5c`
//!   headers are ignored, never fetched or used; a token without a known `kid` is refused;
//! - `iss`, `aud`, `sub`, `jti`, `iat`, `nbf`, `exp` and the type claim `token_use = "relay"` are
//!   required, so a token of another kind never works as a relay token;
//! - time is checked against the caller's `now` with no leeway (jsonwebtoken's own clock-based
//!   checks are switched off because they read the system clock);
//! - the `cnf` thumbprint must equal the presented certificate's, compared in constant time, and a
//!   mismatch is its own error ([`TokenError::BindingMismatch`]) because the relay audits it.
//!
//! Keys live in a [`KeyRing`] directory so they can be rotated: the current key signs, every key
//! in the directory verifies, and [`KeyRing::jwks`] publishes the public halves for relays on
//! other hosts ([`TokenVerifier::from_jwks`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use portcullis_core::{GrantId, Timestamp, Username};

use crate::keyfile::{self, KeyFileError};

/// Value of the [`RelayClaims::token_use`] claim: the only kind of token the relay accepts.
pub const TOKEN_USE_RELAY: &str = "relay";
/// Longest lifetime a relay token can have (DESIGN.md: `exp <= now + 5 min`); longer requested
/// lifetimes are shortened to this.
pub const MAX_TTL_SECS: u64 = 300;
/// `nbf` is set this many seconds before the minting time, so a relay whose clock is slightly
/// behind the web service's does not refuse a fresh token. This grants nothing: the token did not
/// exist before it was minted, and `exp` is not moved.
pub const NBF_BACKDATE_SECS: u64 = 5;
/// Longest token text [`TokenVerifier::verify`] looks at. Ours are about 600 bytes; the bound
/// keeps an attacker from making us decode megabytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The name of the file in a key ring directory that holds the current key id.
const CURRENT_FILE: &str = "current";
/// Every claim a relay token must carry.
const REQUIRED_CLAIMS: [&str; 10] = [
    "iss",
    "aud",
    "sub",
    "token_use",
    "jti",
    "iat",
    "nbf",
    "exp",
    "grant",
    "cnf",
];
/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The claims of a relay token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayClaims {
    /// The web service that minted the token.
    pub iss: String,
    /// The relay (a single audience string).
    pub aud: String,
    /// The vendor's username.
    pub sub: Username,
    /// The kind of token; always [`TOKEN_USE_RELAY`] for a relay token.
    pub token_use: String,
    /// 128 random bits, base64url: identifies this token in the audit log.
    pub jti: String,
    /// Minting time, Unix seconds.
    pub iat: u64,
    /// Not valid before, Unix seconds.
    pub nbf: u64,
    /// Not valid from this second on, Unix seconds.
    pub exp: u64,
    /// The grant the token is for.
    pub grant: GrantId,
    /// Confirmation: the client certificate the token is bound to.
    pub cnf: Cnf,
}

impl RelayClaims {
    /// When the token stops being valid (`exp`).
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_secs(self.exp).unwrap_or(Timestamp::MAX)
    }
}

/// RFC 8705 confirmation claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cnf {
    /// base64url (no padding) of the SHA-256 of the client certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Why a token could not be minted or was refused, or a key set could not be used. Messages are
/// written for an operator reading the audit log; none contains the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the relay token is not a well-formed JWT")]
    Malformed,
    #[error("the relay token is not signed with EdDSA, the only algorithm the relay accepts")]
    Algorithm,
    #[error("the relay token does not say which key signed it (no kid header)")]
    MissingKeyId,
    #[error("the relay token was signed with a key the relay does not know (unknown kid)")]
    UnknownKey,
    #[error(
        "the relay token's header marks extensions as critical, which the relay does not support"
    )]
    UnsupportedHeader,
    #[error("the relay token's signature is invalid")]
    Signature,
    #[error("the relay token lacks the required claim {0}")]
    MissingClaim(&'static str),
    #[error("the relay token has expired")]
    Expired,
    #[error("the relay token is not valid yet")]
    NotYetValid,
    #[error("the relay token was issued for another audience")]
    WrongAudience,
    #[error("the relay token was issued by an unexpected issuer")]
    WrongIssuer,
    #[error("the token is not a relay token (wrong token_use)")]
    WrongType,
    #[error(
        "the relay token is bound to a different client certificate than the one presented on this connection"
    )]
    BindingMismatch,
    #[error(
        "a client certificate thumbprint must be a SHA-256 digest: 64 hex digits or 43 base64url characters"
    )]
    BadThumbprint,
    #[error(
        "no relay token can be issued: it would already be expired (the grant window has ended or the lifetime is zero)"
    )]
    NothingToMint,
    #[error("the published key set is unusable: {0}")]
    KeySet(&'static str),
    #[error("could not get random bytes from the operating system: {0}")]
    Random(#[source] rand::Error),
    #[error("could not sign the relay token: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
    #[error("the relay token could not be verified")]
    Verification,
}

/// base64url (no padding) of the SHA-256 of a client certificate's DER: the RFC 8705
/// `x5t#S256` value.
pub fn thumbprint(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der))
}

/// Normalises a SHA-256 certificate thumbprint to the base64url form of [`thumbprint`]. Accepts
/// 64 hex digits (either case; what the web API receives as `client_cert_sha256`), the same with
/// a colon between bytes (as `openssl x509 -fingerprint -sha256` prints it), or 43 base64url
/// characters. Surrounding whitespace is ignored.
pub fn parse_thumbprint(text: &str) -> Result<String, TokenError> {
    let text = text.trim();
    let mut digest = [0u8; 32];
    let hex_digits: String =
        if text.len() == 95 && text.bytes().skip(2).step_by(3).all(|b| b == b':') {
            text.split(':').collect()
        } else {
            text.to_owned()
        };
    if hex_digits.len() == 64 {
        hex::decode_to_slice(&hex_digits, &mut digest).map_err(|_| TokenError::BadThumbprint)?;
    } else if text.len() == 43 {
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::BadThumbprint)?;
        digest = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| TokenError::BadThumbprint)?;
    } else {
        return Err(TokenError::BadThumbprint);
    }
    Ok(URL_SAFE_NO_PAD.encode(digest))
}

/// The `kid` of a key: `"k"` and the first 8 hex digits of the SHA-256 of the public key. Derived
/// from the key, so a key file whose name does not match its content is detected.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("k{}", hex::encode(&digest[..4]))
}

/// Mints relay tokens with one Ed25519 key.
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
    encoding: EncodingKey,
    issuer: String,
    audience: String,
}

impl TokenSigner {
    /// A signer whose tokens carry `kid` in the header and `issuer`/`audience` in the claims.
    /// Use [`KeyRing::signer`] in the services; this is for tools and tests.
    pub fn new(
        kid: impl Into<String>,
        key: SigningKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        let mut der = Zeroizing::new([0u8; 48]);
        der[..16].copy_from_slice(&PKCS8_ED25519_PREFIX);
        der[16..].copy_from_slice(key.as_bytes());
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(&*der),
            key,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Mints a token for user `sub` and grant `grant`, bound to the client certificate
    /// `thumbprint` (hex or base64url, see [`parse_thumbprint`]). `iat = now`,
    /// `nbf = now - NBF_BACKDATE_SECS`, `exp = min(now + min(ttl, MAX_TTL_SECS), not_after)`
    /// where `not_after` is the grant's window end. Refuses when `exp <= now`.
    ///
    /// The caller is responsible for the rest of DESIGN.md's conditions: an approved grant inside
    /// its window, its own vendor, a recent MFA.
    pub fn mint(
        &self,
        sub: &Username,
        grant: GrantId,
        thumbprint: &str,
        now: Timestamp,
        ttl: Duration,
        not_after: Timestamp,
    ) -> Result<(String, RelayClaims), TokenError> {
        let x5t_s256 = parse_thumbprint(thumbprint)?;
        let now_unix = now.unix_secs();
        let exp = now_unix
            .saturating_add(ttl.as_secs().min(MAX_TTL_SECS))
            .min(not_after.unix_secs());
        if exp <= now_unix {
            return Err(TokenError::NothingToMint);
        }
        let mut jti = [0u8; 16];
        OsRng.try_fill_bytes(&mut jti).map_err(TokenError::Random)?;
        let claims = RelayClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.clone(),
            token_use: TOKEN_USE_RELAY.to_owned(),
            jti: URL_SAFE_NO_PAD.encode(jti),
            iat: now_unix,
            nbf: now_unix.saturating_sub(NBF_BACKDATE_SECS),
            exp,
            grant,
            cnf: Cnf { x5t_s256 },
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(TokenError::Signing)?;
        Ok((token, claims))
    }
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Verifies relay tokens offline against a fixed set of Ed25519 public keys, by `kid`.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier with no keys yet; add them with [`add_key`](Self::add_key).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();
        let mut validation = Validation::new(Algorithm::EdDSA);
        // jsonwebtoken's defaults are loose (leeway 60 s, nbf unchecked) and its time checks
        // read the system clock. We check `nbf <= now < exp` ourselves against the injected
        // `now`, so its time checks are off; leeway 0 in case they are ever switched back on.
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.set_audience(&[&audience]);
        validation.set_issuer(&[&issuer]);
        // `iat`, `jti` and the other claims are required by `RelayClaims` itself.
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        Self {
            issuer,
            audience,
            keys: HashMap::new(),
            validation,
        }
    }

    /// Trusts `key` for tokens whose header names `kid`.
    pub fn add_key(&mut self, kid: impl Into<String>, key: &VerifyingKey) {
        // The raw 32-byte public key: what jsonwebtoken's EdDSA verifier reads.
        self.keys
            .insert(kid.into(), DecodingKey::from_ed_der(key.as_bytes()));
    }

    /// The key ids this verifier trusts, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// A verifier for the keys of a published JWKS (`{"keys": [...]}` as made by
    /// [`KeyRing::jwks`]), for a relay on another host. Only Ed25519 signing keys (`kty` OKP,
    /// `crv` Ed25519, `alg` EdDSA if present, `use` sig if present) are taken; others are
    /// skipped. A malformed Ed25519 key, a missing or duplicate `kid`, or a set without any
    /// usable key is an error.
    pub fn from_jwks(
        jwks: &serde_json::Value,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, TokenError> {
        let mut verifier = Self::new(issuer, audience);
        let keys = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(TokenError::KeySet("it has no \"keys\" array"))?;
        for jwk in keys {
            let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
            let ed25519 = field("kty") == Some("OKP")
                && field("crv") == Some("Ed25519")
                && field("alg").is_none_or(|alg| alg == "EdDSA")
                && field("use").is_none_or(|u| u == "sig");
            if !ed25519 {
                continue;
            }
            let kid = field("kid").ok_or(TokenError::KeySet("an Ed25519 key has no kid"))?;
            let x = field("x").ok_or(TokenError::KeySet("an Ed25519 key has no x"))?;
            let raw = URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| TokenError::KeySet("an Ed25519 key's x is not base64url"))?;
            let bytes = <[u8; 32]>::try_from(raw.as_slice())
                .map_err(|_| TokenError::KeySet("an Ed25519 key's x is not 32 bytes"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| TokenError::KeySet("an Ed25519 key's x is not a valid public key"))?;
            if key.is_weak() {
                return Err(TokenError::KeySet(
                    "an Ed25519 key is a weak (small-order) key",
                ));
            }
            if verifier.keys.contains_key(kid) {
                return Err(TokenError::KeySet("two keys share a kid"));
            }
            verifier.add_key(kid, &key);
        }
        if verifier.keys.is_empty() {
            return Err(TokenError::KeySet("it contains no Ed25519 signing key"));
        }
        Ok(verifier)
    }

    /// Verifies `token` at time `now_unix` for a connection whose client certificate has the
    /// thumbprint `presented_thumbprint` (as from [`thumbprint`]; hex is accepted too) and returns
    /// its claims. See the module documentation for the checks. The binding is checked last, so
    /// [`TokenError::BindingMismatch`] means an otherwise valid token was presented on the wrong
    /// connection.
    ///
    /// Not checked here: whether the grant is still approved and inside its window, and whether
    /// the `jti` was seen before. The relay does both against the store.
    pub fn verify(
        &self,
        token: &str,
        now: Timestamp,
        presented_thumbprint: &str,
    ) -> Result<RelayClaims, TokenError> {
        let now_unix = now.unix_secs();
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        // Our own look at the header, before jsonwebtoken's: pin the algorithm and pick the key
        // from the `kid` alone. Every other header field (`jku`, `x5u`, `jwk`, `x5c`, ...) is
        // ignored.
        let header: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(serde_json::Value::as_str) != Some("EdDSA") {
            return Err(TokenError::Algorithm);
        }
        if header.contains_key("crit") {
            return Err(TokenError::UnsupportedHeader);
        }
        let kid = match header.get("kid") {
            None => return Err(TokenError::MissingKeyId),
            Some(kid) => kid.as_str().ok_or(TokenError::Malformed)?,
        };
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;

        // Claims as JSON first, so a missing claim is reported by name; then typed.
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
            .map_err(|e| map_decode_error(e.into_kind()))?
            .claims;
        if let Some(missing) = REQUIRED_CLAIMS
            .iter()
            .find(|name| claims.get(**name).is_none_or(serde_json::Value::is_null))
        {
            return Err(TokenError::MissingClaim(missing));
        }
        let claims: RelayClaims =
            serde_json::from_value(claims).map_err(|_| TokenError::Malformed)?;

        // jsonwebtoken checked these too; checking again keeps the guarantee independent of its
        // configuration.
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.token_use != TOKEN_USE_RELAY {
            return Err(TokenError::WrongType);
        }
        if now_unix < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if now_unix >= claims.exp {
            return Err(TokenError::Expired);
        }
        let presented = parse_thumbprint(presented_thumbprint)?;
        if !bool::from(claims.cnf.x5t_s256.as_bytes().ct_eq(presented.as_bytes())) {
            return Err(TokenError::BindingMismatch);
        }
        Ok(claims)
    }
}

fn map_decode_error(kind: ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        // The name comes from our own list of required claims, not from the token.
        ErrorKind::MissingRequiredClaim(claim) => REQUIRED_CLAIMS
            .iter()
            .find(|name| **name == claim)
            .map_or(TokenError::Malformed, |name| TokenError::MissingClaim(name)),
        ErrorKind::InvalidToken
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        _ => TokenError::Verification,
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &self.kids())
            .finish()
    }
}

/// Why a key ring directory could not be loaded, created or rotated. Every message names the
/// file or directory; none contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "key file {path} holds the key with id {kid}; a signing key file must be named <kid>.key (rename or remove it)"
    )]
    NameMismatch { path: PathBuf, kid: String },
    #[error(
        "key ring {dir} has no current key (no {CURRENT_FILE} file); start the web service once to create one"
    )]
    NoCurrent { dir: PathBuf },
    #[error("{path} names a key that is not in the key ring (no {kid}.key beside it)")]
    CurrentUnknown { path: PathBuf, kid: String },
    #[error("{path} does not contain a key id")]
    CurrentMalformed { path: PathBuf },
    #[error("could not get random bytes from the operating system: {0}")]
    Random(#[source] rand::Error),
}

impl KeyRingError {
    fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

/// The relay-token signing keys: a directory of `<kid>.key` files (Ed25519 seeds in the
/// [`keyfile`] format, mode 0600, kid = [`key_id`] of the public key) and a `current` file that
/// names the key that signs new tokens.
///
/// The current key is named by the `current` file rather than picked by file time, because
/// modification times do not survive every backup, restore or copy of a data directory. The file
/// is replaced atomically (rename), and a new key file is always in place before `current` names
/// it, so a reader that reads `current` first and then lists the directory never sees a dangling
/// name.
///
/// Every key in the directory verifies, so tokens signed just before a [`rotate`](Self::rotate)
/// stay valid until they expire (at most [`MAX_TTL_SECS`]). To retire a key, delete its file once
/// the tokens it signed have expired. Processes holding a loaded ring or verifier do not see a
/// rotation until they load it again (or fetch the JWKS again).
pub struct KeyRing {
    dir: PathBuf,
    keys: BTreeMap<String, SigningKey>,
    current: String,
    current_key: SigningKey,
}

impl KeyRing {
    /// Loads the ring in `dir`, creating the directory (mode 0700; its parent must exist) and a
    /// first key if it has no current key yet. When several processes race to create the first
    /// key, exactly one key becomes current and the others load it.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyRingError> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(KeyRingError::io(dir, "create the key directory", e)),
        }
        match Self::load(dir) {
            Err(KeyRingError::NoCurrent { .. }) => {}
            loaded => return loaded,
        }
        let kid = new_key(dir)?;
        let marker = dir.join(CURRENT_FILE);
        // Never replaces: if another process made a first key meanwhile, theirs wins.
        let won = portcullis_files::create_new(&marker, format!("{kid}\n").as_bytes(), 0o600)
            .map_err(|e| KeyRingError::io(&marker, e.action, e.source))?;
        if !won {
            // Our key was never current, so nothing was signed with it.
            let path = dir.join(format!("{kid}.key"));
            fs::remove_file(&path).map_err(|e| KeyRingError::io(&path, "remove", e))?;
        }
        sync_dir(dir)?;
        Self::load(dir)
    }

    /// Loads the ring in `dir`; never creates anything (for processes that only verify).
    pub fn load(dir: &Path) -> Result<Self, KeyRingError> {
        // `current` first, then the keys: a key file is always linked before `current` names it.
        let marker = dir.join(CURRENT_FILE);
        let current = match fs::read_to_string(&marker) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyRingError::NoCurrent {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(KeyRingError::io(&marker, "read", e)),
        };
        if current.is_empty() || current.len() > 64 || current.contains(['/', '\0']) {
            return Err(KeyRingError::CurrentMalformed { path: marker });
        }
        let mut keys = BTreeMap::new();
        let entries = fs::read_dir(dir).map_err(|e| KeyRingError::io(dir, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| KeyRingError::io(dir, "list", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Hidden names are temporaries (ours and keyfile's); anything not *.key is not a key.
            let Some(stem) = name.strip_suffix(".key") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let key = match keyfile::load_signing_key(&path) {
                Ok(key) => key,
                // Removed since we listed it (a process that lost the race to create the first
                // key deletes its own): a removed key is not trusted.
                Err(KeyFileError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let kid = key_id(&key.verifying_key());
            if stem != kid {
                return Err(KeyRingError::NameMismatch { path, kid });
            }
            keys.insert(kid, key);
        }
        let Some(current_key) = keys.get(&current).cloned() else {
            return Err(KeyRingError::CurrentUnknown {
                path: marker,
                kid: current,
            });
        };
        Ok(Self {
            dir: dir.to_owned(),
            keys,
            current,
            current_key,
        })
    }

    /// Creates a new key in `dir` and makes it current; the previous keys stay and keep
    /// verifying. Returns the reloaded ring.
    pub fn rotate(dir: &Path) -> Result<Self, KeyRingError> {
        // Refuse to rotate a ring that does not load: a rotation must not paper over a problem.
        Self::load(dir)?;
        let kid = new_key(dir)?;
        let marker = dir.join(CURRENT_FILE);
        portcullis_files::replace(&marker, format!("{kid}\n").as_bytes(), 0o600)
            .map_err(|e| KeyRingError::io(&marker, e.action, e.source))?;
        Self::load(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the key that signs new tokens.
    pub fn current_kid(&self) -> &str {
        &self.current
    }

    /// Every key id in the ring, sorted.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// A signer using the current key.
    pub fn signer(&self, issuer: impl Into<String>, audience: impl Into<String>) -> TokenSigner {
        TokenSigner::new(
            self.current.clone(),
            self.current_key.clone(),
            issuer,
            audience,
        )
    }

    /// A verifier trusting every key in the ring, the current one and the previous ones.
    pub fn verifier(
        &self,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> TokenVerifier {
        let mut verifier = TokenVerifier::new(issuer, audience);
        for (kid, key) in &self.keys {
            verifier.add_key(kid.clone(), &key.verifying_key());
        }
        verifier
    }

    /// The public keys as a JWKS (RFC 7517, RFC 8037), for publication to relays:
    /// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":..,"kid":..,"alg":"EdDSA","use":"sig"}, ..]}`,
    /// sorted by kid.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("kids", &self.kids())
            .field("current", &self.current)
            .finish()
    }
}

/// Creates a key file `<dir>/<kid>.key` for a fresh key and returns its kid. The key is made under
/// a hidden temporary name by [`keyfile::signing_key`] (atomic, owner-only, fsynced), then linked
/// to its final name, which depends on the key.
fn new_key(dir: &Path) -> Result<String, KeyRingError> {
    let pending = TempPath(dir.join(format!(".new-{}.pending", random_hex()?)));
    let key = keyfile::signing_key(&pending.0)?;
    let kid = key_id(&key.verifying_key());
    let path = dir.join(format!("{kid}.key"));
    fs::hard_link(&pending.0, &path).map_err(|e| KeyRingError::io(&path, "create", e))?;
    drop(pending);
    sync_dir(dir)?;
    Ok(kid)
}

fn sync_dir(dir: &Path) -> Result<(), KeyRingError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyRingError::io(dir, "sync", e))
}

fn random_hex() -> Result<String, KeyRingError> {
    let mut bytes = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(KeyRingError::Random)?;
    Ok(hex::encode(bytes))
}

/// Removes a temporary name on every way out; after a successful link or rename the file lives
/// on under its final name (or is already gone), so failure to remove is ignored.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    const ISS: &str = "https://broker.plant.example";
    const AUD: &str = "portcullis-relay";
    const NOW: u64 = 1_700_000_000;
    const CERT: &[u8] = b"client certificate DER";

    /// The tests speak Unix seconds and plain names, as the claims do.
    trait InSeconds {
        fn mint_secs(
            &self,
            sub: &str,
            grant: i64,
            thumbprint: &str,
            now: u64,
            ttl: u64,
            not_after: u64,
        ) -> Result<(String, RelayClaims), TokenError>;
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_secs(secs).unwrap_or(Timestamp::MAX)
    }

    impl InSeconds for TokenSigner {
        fn mint_secs(
            &self,
            sub: &str,
            grant: i64,
            thumbprint: &str,
            now: u64,
            ttl: u64,
            not_after: u64,
        ) -> Result<(String, RelayClaims), TokenError> {
            let sub = Username::parse(sub).unwrap();
            let ttl = std::time::Duration::from_secs(ttl);
            self.mint(
                &sub,
                GrantId::new(grant),
                thumbprint,
                at(now),
                ttl,
                at(not_after),
            )
        }
    }

    impl TokenVerifier {
        fn verify_secs(
            &self,
            token: &str,
            now: u64,
            thumbprint: &str,
        ) -> Result<RelayClaims, TokenError> {
            self.verify(token, at(now), thumbprint)
        }
    }

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn signer() -> TokenSigner {
        let key = signing_key(1);
        TokenSigner::new(key_id(&key.verifying_key()), key, ISS, AUD)
    }

    fn verifier_for(signer: &TokenSigner) -> TokenVerifier {
        let mut verifier = TokenVerifier::new(ISS, AUD);
        verifier.add_key(signer.kid(), &signer.verifying_key());
        verifier
    }

    fn mint(signer: &TokenSigner) -> (String, RelayClaims) {
        signer
            .mint_secs("vendor-anna", 42, &thumbprint(CERT), NOW, 300, NOW + 3600)
            .unwrap()
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn claims_json(claims: &RelayClaims) -> serde_json::Value {
        serde_json::to_value(claims).unwrap()
    }

    /// Signs arbitrary header and claims JSON with `key` (Ed25519), as an attacker or a buggy
    /// minter could.
    fn sign_raw(
        header: &serde_json::Value,
        claims: &serde_json::Value,
        key: &SigningKey,
    ) -> String {
        use ed25519_dalek::Signer;
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn header(kid: &str) -> serde_json::Value {
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})
    }

    fn verify(verifier: &TokenVerifier, token: &str, now: u64) -> Result<RelayClaims, TokenError> {
        verifier.verify_secs(token, now, &thumbprint(CERT))
    }

    #[test]
    fn round_trip() {
        let signer = signer();
        let (token, claims) = mint(&signer);
        let verified = verify(&verifier_for(&signer), &token, NOW).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(claims.iss, ISS);
        assert_eq!(claims.aud, AUD);
        assert_eq!(claims.sub.as_str(), "vendor-anna");
        assert_eq!(claims.token_use, "relay");
        assert_eq!(claims.grant, GrantId::new(42));
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.nbf, NOW - NBF_BACKDATE_SECS);
        assert_eq!(claims.exp, NOW + 300);
        assert_eq!(claims.cnf.x5t_s256, thumbprint(CERT));
        assert_eq!(URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len(), 16);
        assert_ne!(claims.jti, mint(&signer).1.jti);

        // The header is exactly alg EdDSA, typ JWT and our kid.
        let head = token.split('.').next().unwrap();
        let head: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
        assert_eq!(
            head,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": signer.kid()})
        );
        // The payload uses the RFC 8705 member name.
        let payload = token.split('.').nth(1).unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload["cnf"]["x5t#S256"], thumbprint(CERT));
    }

    #[test]
    fn validity_is_nbf_inclusive_to_exp_exclusive_on_the_injected_clock() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let (token, claims) = mint(&signer);
        verify(&verifier, &token, claims.nbf).unwrap();
        verify(&verifier, &token, claims.exp - 1).unwrap();
        assert!(matches!(
            verify(&verifier, &token, claims.exp),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            verify(&verifier, &token, claims.exp + 86_400),
            Err(TokenError::Expired)
        ));
        assert!(matches!(
            verify(&verifier, &token, claims.nbf - 1),
            Err(TokenError::NotYetValid)
        ));
        // A time far from the real clock: jsonwebtoken's own clock plays no part.
        let (old, _) = signer
            .mint_secs("vendor-anna", 42, &thumbprint(CERT), 1_000, 300, 10_000)
            .unwrap();
        verify(&verifier, &old, 1_000).unwrap();
        assert!(matches!(
            verify(&verifier, &old, 1_300),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let signer = signer();
        let (token, _) = mint(&signer);
        let mut other_aud = TokenVerifier::new(ISS, "another-relay");
        other_aud.add_key(signer.kid(), &signer.verifying_key());
        assert!(matches!(
            verify(&other_aud, &token, NOW),
            Err(TokenError::WrongAudience)
        ));
        let mut other_iss = TokenVerifier::new("https://evil.example", AUD);
        other_iss.add_key(signer.kid(), &signer.verifying_key());
        assert!(matches!(
            verify(&other_iss, &token, NOW),
            Err(TokenError::WrongIssuer)
        ));
        // An audience array that includes the relay is not a relay token either.
        let mut claims = claims_json(&mint(&signer).1);
        claims["aud"] = serde_json::json!([AUD, "web"]);
        let token = sign_raw(&header(signer.kid()), &claims, &signing_key(1));
        assert!(verify(&verifier_for(&signer), &token, NOW).is_err());
    }

    #[test]
    fn a_token_of_another_kind_is_refused() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let mut claims = claims_json(&mint(&signer).1);
        for other in ["session", "Relay", "relay ", ""] {
            claims["token_use"] = serde_json::json!(other);
            let token = sign_raw(&header(signer.kid()), &claims, &signing_key(1));
            assert!(
                matches!(verify(&verifier, &token, NOW), Err(TokenError::WrongType)),
                "token_use {other:?} accepted"
            );
        }
        claims.as_object_mut().unwrap().remove("token_use");
        let token = sign_raw(&header(signer.kid()), &claims, &signing_key(1));
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::MissingClaim("token_use"))
        ));
    }

    #[test]
    fn missing_required_claims_are_refused() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let claims = claims_json(&mint(&signer).1);
        for name in [
            "exp", "nbf", "iat", "aud", "iss", "sub", "jti", "grant", "cnf",
        ] {
            let mut without = claims.clone();
            without.as_object_mut().unwrap().remove(name);
            let token = sign_raw(&header(signer.kid()), &without, &signing_key(1));
            match verify(&verifier, &token, NOW) {
                Err(TokenError::MissingClaim(missing)) => assert_eq!(missing, name),
                other => panic!("without {name}: {other:?}"),
            }
            // A null is as good as missing.
            let mut null = claims.clone();
            null[name] = serde_json::Value::Null;
            let token = sign_raw(&header(signer.kid()), &null, &signing_key(1));
            assert!(
                matches!(
                    verify(&verifier, &token, NOW),
                    Err(TokenError::MissingClaim(_))
                ),
                "null {name} accepted"
            );
        }
        // Present but of the wrong type.
        let mut wrong = claims.clone();
        wrong["grant"] = serde_json::json!("42");
        let token = sign_raw(&header(signer.kid()), &wrong, &signing_key(1));
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::Malformed)
        ));
        let mut without = claims.clone();
        without.as_object_mut().unwrap().remove("aud");
        let token = sign_raw(&header(signer.kid()), &without, &signing_key(1));
        assert_eq!(
            verify(&verifier, &token, NOW).unwrap_err().to_string(),
            "the relay token lacks the required claim aud"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let signer = signer();
        let claims = claims_json(&mint(&signer).1);
        for alg in ["none", "None", "NONE"] {
            let head = serde_json::json!({"alg": alg, "typ": "JWT", "kid": signer.kid()});
            let token = format!("{}.{}.", b64(&head), b64(&claims));
            assert!(
                matches!(
                    verify(&verifier_for(&signer), &token, NOW),
                    Err(TokenError::Algorithm)
                ),
                "alg {alg} accepted"
            );
        }
        // No alg at all.
        let head = serde_json::json!({"typ": "JWT", "kid": signer.kid()});
        let token = format!("{}.{}.", b64(&head), b64(&claims));
        assert!(matches!(
            verify(&verifier_for(&signer), &token, NOW),
            Err(TokenError::Algorithm)
        ));
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        let signer = signer();
        let claims = mint(&signer).1;
        let public = signer.verifying_key().to_bytes();
        let mut head = Header::new(Algorithm::HS256);
        head.kid = Some(signer.kid().to_owned());
        // Both the raw public key and its base64url text, as attackers try both.
        for secret in [public.to_vec(), URL_SAFE_NO_PAD.encode(public).into_bytes()] {
            let token =
                jsonwebtoken::encode(&head, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert!(matches!(
                verify(&verifier_for(&signer), &token, NOW),
                Err(TokenError::Algorithm)
            ));
        }
    }

    #[test]
    fn rs256_header_is_refused() {
        let signer = signer();
        let claims = claims_json(&mint(&signer).1);
        for alg in ["RS256", "ES256", "PS256", "HS512", "EdDSA "] {
            let head = serde_json::json!({"alg": alg, "typ": "JWT", "kid": signer.kid()});
            let token = format!(
                "{}.{}.{}",
                b64(&head),
                b64(&claims),
                URL_SAFE_NO_PAD.encode([0x5a; 256])
            );
            assert!(
                matches!(
                    verify(&verifier_for(&signer), &token, NOW),
                    Err(TokenError::Algorithm)
                ),
                "alg {alg:?} not refused as an algorithm error"
            );
        }
    }

    #[test]
    fn unknown_and_missing_kid_are_refused() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let claims = claims_json(&mint(&signer).1);
        let attacker = signing_key(66);
        let token = sign_raw(&header("kattacker"), &claims, &attacker);
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::UnknownKey)
        ));
        // Our key, but a kid we do not have: still refused (the kid picks the key, nothing else).
        let token = sign_raw(&header("k00000000"), &claims, &signing_key(1));
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::UnknownKey)
        ));
        let no_kid = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
        let token = sign_raw(&no_kid, &claims, &signing_key(1));
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::MissingKeyId)
        ));
        let numeric_kid = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": 7});
        let token = sign_raw(&numeric_kid, &claims, &signing_key(1));
        assert!(verify(&verifier, &token, NOW).is_err());
    }

    #[test]
    fn jku_x5u_and_jwk_headers_are_ignored() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let claims = claims_json(&mint(&signer).1);
        let attacker = signing_key(66);
        let attacker_x = URL_SAFE_NO_PAD.encode(attacker.verifying_key().as_bytes());
        let embedded = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": "kattacker"
        });
        // The attacker's own kid, with pointers to the attacker's key.
        let head = serde_json::json!({
            "alg": "EdDSA", "typ": "JWT", "kid": "kattacker",
            "jku": "https://evil.example/jwks.json",
            "x5u": "https://evil.example/cert.pem",
            "jwk": embedded,
        });
        let token = sign_raw(&head, &claims, &attacker);
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::UnknownKey)
        ));
        // Our kid, with the attacker's key embedded or linked: verified against our key, fails.
        let mut head = head;
        head["kid"] = serde_json::json!(signer.kid());
        let token = sign_raw(&head, &claims, &attacker);
        assert!(matches!(
            verify(&verifier, &token, NOW),
            Err(TokenError::Signature)
        ));
        // And a genuine token with those headers added still verifies by kid alone.
        let token = sign_raw(&head, &claims, &signing_key(1));
        verify(&verifier, &token, NOW).unwrap();
    }

    #[test]
    fn crit_header_is_refused() {
        let signer = signer();
        let claims = claims_json(&mint(&signer).1);
        let mut head = header(signer.kid());
        head["crit"] = serde_json::json!(["b64"]);
        head["b64"] = serde_json::json!(false);
        let token = sign_raw(&head, &claims, &signing_key(1));
        assert!(matches!(
            verify(&verifier_for(&signer), &token, NOW),
            Err(TokenError::UnsupportedHeader)
        ));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let (token, claims) = mint(&signer);
        let parts: Vec<&str> = token.split('.').collect();
        let mut changes: Vec<serde_json::Value> = Vec::new();
        for (name, value) in [
            ("grant", serde_json::json!(43)),
            ("sub", serde_json::json!("vendor-bob")),
            ("exp", serde_json::json!(claims.exp + 3600)),
            ("cnf", serde_json::json!({"x5t#S256": thumbprint(b"thief")})),
        ] {
            let mut changed = claims_json(&claims);
            changed[name] = value;
            changes.push(changed);
        }
        for changed in changes {
            let forged = format!("{}.{}.{}", parts[0], b64(&changed), parts[2]);
            assert!(
                matches!(verify(&verifier, &forged, NOW), Err(TokenError::Signature)),
                "forged {changed} accepted"
            );
        }
        // A flipped bit in the signature.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            verify(&verifier, &forged, NOW),
            Err(TokenError::Signature)
        ));
        // The untouched token still verifies.
        verify(&verifier, &token, NOW).unwrap();
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let (token, _) = mint(&signer);
        for bad in [
            String::new(),
            "not a token".to_owned(),
            "a.b".to_owned(),
            "a.b.c".to_owned(),
            format!("{token}.extra"),
            token.replacen('.', "!", 1),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(verify(&verifier, &bad, NOW), Err(TokenError::Malformed)),
                "{bad:?} not refused as malformed"
            );
        }
    }

    #[test]
    fn binding_mismatch_is_its_own_error() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let (token, _) = mint(&signer);
        let err = verifier
            .verify_secs(&token, NOW, &thumbprint(b"another certificate"))
            .unwrap_err();
        assert!(matches!(err, TokenError::BindingMismatch));
        // The hex form of the right thumbprint is the same certificate.
        let hex = hex::encode(Sha256::digest(CERT));
        verifier.verify_secs(&token, NOW, &hex).unwrap();
        assert!(matches!(
            verifier.verify_secs(&token, NOW, ""),
            Err(TokenError::BadThumbprint)
        ));
    }

    #[test]
    fn error_messages_never_contain_the_token() {
        let signer = signer();
        let verifier = verifier_for(&signer);
        let (token, _) = mint(&signer);
        let mut errors = vec![
            verify(&verifier, &token, NOW + 3600).unwrap_err(),
            verifier
                .verify_secs(&token, NOW, &thumbprint(b"x"))
                .unwrap_err(),
        ];
        let mut other = TokenVerifier::new(ISS, "x");
        other.add_key(signer.kid(), &signer.verifying_key());
        errors.push(verify(&other, &token, NOW).unwrap_err());
        for err in errors {
            let shown = format!("{err} {err:?}");
            for part in token.split('.') {
                assert!(!shown.contains(part), "{shown}");
            }
        }
    }

    #[test]
    fn exp_is_capped_at_not_after_and_the_max_ttl() {
        let signer = signer();
        let tp = thumbprint(CERT);
        let (_, claims) = signer.mint_secs("v", 1, &tp, NOW, 300, NOW + 120).unwrap();
        assert_eq!(claims.exp, NOW + 120);
        let (_, claims) = signer.mint_secs("v", 1, &tp, NOW, 60, NOW + 120).unwrap();
        assert_eq!(claims.exp, NOW + 60);
        let (_, claims) = signer
            .mint_secs("v", 1, &tp, NOW, 86_400, u64::MAX)
            .unwrap();
        assert_eq!(claims.exp, NOW + MAX_TTL_SECS);
        for (ttl, not_after) in [(300, NOW), (300, NOW - 1), (0, NOW + 120)] {
            assert!(
                matches!(
                    signer.mint_secs("v", 1, &tp, NOW, ttl, not_after),
                    Err(TokenError::NothingToMint)
                ),
                "minted with ttl {ttl}, not_after {not_after}"
            );
        }
        assert!(matches!(
            signer.mint_secs("v", 1, "not a thumbprint", NOW, 300, NOW + 120),
            Err(TokenError::BadThumbprint)
        ));
    }

    #[test]
    fn thumbprints_parse_from_hex_colon_hex_and_base64url() {
        let der = b"certificate";
        let expected = thumbprint(der);
        assert_eq!(expected.len(), 43);
        let hex = hex::encode(Sha256::digest(der));
        assert_eq!(parse_thumbprint(&hex).unwrap(), expected);
        assert_eq!(parse_thumbprint(&hex.to_uppercase()).unwrap(), expected);
        assert_eq!(parse_thumbprint(&format!(" {hex}\n")).unwrap(), expected);
        let colons: Vec<String> = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(parse_thumbprint(&colons.join(":")).unwrap(), expected);
        assert_eq!(parse_thumbprint(&expected).unwrap(), expected);
        for bad in [
            "",
            &hex[..62],
            &format!("{hex}00"),
            &format!("{}zz", &hex[..62]),
            &format!("{expected}="),
            &expected[..42],
            &URL_SAFE_NO_PAD.encode([0u8; 31]),
            &format!("{}+", &expected[..42]),
        ] {
            assert!(
                matches!(parse_thumbprint(bad), Err(TokenError::BadThumbprint)),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn key_ring_is_created_once_and_reloaded() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("relay-token");
        let ring = KeyRing::load_or_create(&dir).unwrap();
        assert_eq!(ring.kids(), vec![ring.current_kid()]);
        let kid = ring.current_kid().to_owned();
        assert_eq!(kid.len(), 9);
        assert!(kid.starts_with('k'));

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{kid}.key"))), 0o600);
        // Only the key and the marker: no temporaries left behind.
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["current".to_owned(), format!("{kid}.key")]);

        let again = KeyRing::load_or_create(&dir).unwrap();
        assert_eq!(again.current_kid(), kid);
        assert_eq!(KeyRing::load(&dir).unwrap().current_kid(), kid);
    }

    #[test]
    fn load_never_creates() {
        let parent = tempfile::tempdir().unwrap();
        assert!(matches!(
            KeyRing::load(parent.path()),
            Err(KeyRingError::NoCurrent { .. })
        ));
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ring");
        fs::create_dir(&dir).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    KeyRing::load_or_create(&dir)
                        .unwrap()
                        .current_kid()
                        .to_owned()
                })
            })
            .collect();
        let kids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
        // The losers removed their keys.
        assert_eq!(KeyRing::load(&dir).unwrap().kids(), vec![kids[0].as_str()]);
    }

    #[test]
    fn a_key_file_under_the_wrong_name_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path();
        let ring = KeyRing::load_or_create(dir).unwrap();
        let kid = ring.current_kid();
        fs::copy(dir.join(format!("{kid}.key")), dir.join("kdeadbeef.key")).unwrap();
        assert!(matches!(
            KeyRing::load(dir),
            Err(KeyRingError::NameMismatch { .. })
        ));
    }

    #[test]
    fn current_naming_a_missing_key_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path();
        KeyRing::load_or_create(dir).unwrap();
        fs::write(dir.join("current"), "k12345678\n").unwrap();
        let err = KeyRing::load(dir).unwrap_err();
        assert!(matches!(err, KeyRingError::CurrentUnknown { .. }));
        assert!(err.to_string().contains("k12345678.key"), "{err}");
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path();
        let old_ring = KeyRing::load_or_create(dir).unwrap();
        let old_kid = old_ring.current_kid().to_owned();
        let (old_token, _) = old_ring
            .signer(ISS, AUD)
            .mint_secs("v", 7, &thumbprint(CERT), NOW, 300, NOW + 300)
            .unwrap();

        let ring = KeyRing::rotate(dir).unwrap();
        let new_kid = ring.current_kid().to_owned();
        assert_ne!(new_kid, old_kid);
        assert_eq!(ring.kids().len(), 2);
        assert_eq!(KeyRing::load(dir).unwrap().current_kid(), new_kid);

        let verifier = ring.verifier(ISS, AUD);
        verify(&verifier, &old_token, NOW).unwrap();
        let signer = ring.signer(ISS, AUD);
        assert_eq!(signer.kid(), new_kid);
        let (new_token, _) = signer
            .mint_secs("v", 7, &thumbprint(CERT), NOW, 300, NOW + 300)
            .unwrap();
        let head = new_token.split('.').next().unwrap();
        let head: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
        assert_eq!(head["kid"], new_kid);
        verify(&verifier, &new_token, NOW).unwrap();
        // A verifier built before the rotation does not know the new key.
        assert!(matches!(
            verify(&old_ring.verifier(ISS, AUD), &new_token, NOW),
            Err(TokenError::UnknownKey)
        ));
        // Retiring the old key (deleting its file) ends its tokens.
        fs::remove_file(dir.join(format!("{old_kid}.key"))).unwrap();
        let retired = KeyRing::load(dir).unwrap().verifier(ISS, AUD);
        assert!(matches!(
            verify(&retired, &old_token, NOW),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn jwks_round_trip_verifies_tokens_offline() {
        let parent = tempfile::tempdir().unwrap();
        let old = KeyRing::load_or_create(parent.path()).unwrap();
        let ring = KeyRing::rotate(parent.path()).unwrap();
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for key in keys {
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            assert_eq!(key["alg"], "EdDSA");
            assert_eq!(key["use"], "sig");
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(key["x"].as_str().unwrap())
                    .unwrap()
                    .len(),
                32
            );
            // Public halves only.
            assert_eq!(key.as_object().unwrap().len(), 6);
        }
        // Through text, as a relay on another host receives it.
        let published: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&jwks).unwrap()).unwrap();
        let verifier = TokenVerifier::from_jwks(&published, ISS, AUD).unwrap();
        assert_eq!(verifier.kids(), ring.kids());
        for signer in [old.signer(ISS, AUD), ring.signer(ISS, AUD)] {
            let (token, claims) = signer
                .mint_secs("v", 7, &thumbprint(CERT), NOW, 300, NOW + 300)
                .unwrap();
            assert_eq!(verify(&verifier, &token, NOW).unwrap(), claims);
        }
        // Audience and issuer come from the relay's configuration, not the key set.
        let elsewhere = TokenVerifier::from_jwks(&published, ISS, "other-relay").unwrap();
        let (token, _) = ring
            .signer(ISS, AUD)
            .mint_secs("v", 7, &thumbprint(CERT), NOW, 300, NOW + 300)
            .unwrap();
        assert!(matches!(
            verify(&elsewhere, &token, NOW),
            Err(TokenError::WrongAudience)
        ));
    }

    #[test]
    fn unusable_key_sets_are_refused() {
        let x = URL_SAFE_NO_PAD.encode(signing_key(1).verifying_key().as_bytes());
        let ok = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"});
        let with = |field: &str, value: serde_json::Value| {
            let mut key = ok.clone();
            key[field] = value;
            serde_json::json!({ "keys": [key] })
        };
        let mut no_kid = ok.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"keys": "none"}),
            serde_json::json!({"keys": []}),
            serde_json::json!({"keys": [no_kid]}),
            serde_json::json!({"keys": [ok, ok]}),
            with("x", serde_json::json!("short")),
            with("x", serde_json::json!(URL_SAFE_NO_PAD.encode([0u8; 31]))),
            // The identity point: a small-order key that would accept forged signatures.
            with(
                "x",
                serde_json::json!(URL_SAFE_NO_PAD.encode({
                    let mut identity = [0u8; 32];
                    identity[0] = 1;
                    identity
                })),
            ),
            // Only non-Ed25519 keys: nothing usable.
            with("kty", serde_json::json!("oct")),
            with("alg", serde_json::json!("HS256")),
            with("use", serde_json::json!("enc")),
        ] {
            assert!(
                matches!(
                    TokenVerifier::from_jwks(&bad, ISS, AUD),
                    Err(TokenError::KeySet(_))
                ),
                "{bad} accepted"
            );
        }
        let fine = serde_json::json!({ "keys": [ok] });
        assert_eq!(
            TokenVerifier::from_jwks(&fine, ISS, AUD).unwrap().kids(),
            vec!["k1"]
        );
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let signer = signer();
        let shown = format!("{signer:?} {:?}", verifier_for(&signer));
        assert!(shown.contains("<redacted>"));
        let seed = URL_SAFE_NO_PAD.encode(signing_key(1).as_bytes());
        assert!(!shown.contains(&seed));
        assert!(!shown.contains(&format!("{:?}", signing_key(1).as_bytes())));
    }
}
