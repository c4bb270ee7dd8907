//! Passwords: the choice policy (NIST SP 800-63B) and argon2id hashing.
//!
//! The policy has a length floor and ceiling, refuses common, username-based and trivially
//! patterned passwords, asks a real strength estimator (zxcvbn, with the username and the plant's
//! name as context) for a minimum score, and has no composition rules ("one digit, one symbol"):
//! those make passwords harder to remember without making them harder to guess.
//!
//! Every password is NFKC-normalised ([`normalize`]) before it is checked, hashed or compared, so
//! the same passphrase typed on another keyboard or input method (a full-width `ｐ`, a composed
//! `é` against `e` + combining acute) is the same password (NIST SP 800-63B 5.1.1.2).
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so the parameters
//! travel with each hash and can be raised later: [`needs_rehash`] says when a stored hash is
//! weaker than what [`hash`] produces today.
//!
//! Memory: one argon2id computation needs a 19 MiB block buffer. Allocating it per call let the
//! allocator keep every buffer it ever handed out (glibc gives each blocking thread its own arena
//! and raises its mmap threshold after the first large free): a burst of bad logins grew the
//! broker from 18 MB to about 720 MB, for good (issue 12). A [`HashPool`] keeps a fixed number of
//! pre-sized buffers and reuses them, so a burst allocates nothing new; the service sizes it to
//! its argon2 concurrency bound.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// Minimum length in characters (Unicode scalar values, after NFKC), not counting leading and
/// trailing whitespace. SECURITY.md: "minimum length 15".
pub const MIN_LEN: usize = 15;
/// Maximum length in characters. Long enough for any passphrase; the cap bounds the work an
/// anonymous client can make us do per attempt.
pub const MAX_LEN: usize = 256;

/// The lowest zxcvbn score (0 to 4) a new password needs. 3 is "safely unguessable: moderate
/// protection from an offline slow-hash attack" (at least 10^8 guesses), zxcvbn's own advice for
/// accounts. It is enough here because the hash is argon2id at 19 MiB (an offline attacker gets
/// a few hundred guesses per second per core, so 10^8 guesses take years of one machine) and
/// online guessing is throttled and locked out. 4 (10^10) would also refuse many memorable
/// passphrases of three or four ordinary words, which pushes people to write passwords down.
pub const MIN_SCORE: u8 = 3;
/// zxcvbn's matching grows faster than linearly with length; past this many characters the rest
/// of the password only adds strength, so only this prefix is estimated.
const ESTIMATE_CHARS: usize = 100;

/// argon2id memory cost in KiB (19 MiB, the OWASP minimum for argon2id).
pub const M_COST_KIB: u32 = 19 * 1024;
/// argon2id iterations.
pub const T_COST: u32 = 2;
/// argon2id lanes. SECURITY.md fixes p = 1.
pub const P_COST: u32 = 1;
/// Salt length in bytes.
pub const SALT_LEN: usize = 16;
/// Hash output length in bytes.
pub const OUTPUT_LEN: usize = 32;

/// Evaluated at compile time: invalid constants above fail the build, not a login.
const PARAMS: Params = match Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)) {
    Ok(params) => params,
    Err(_) => panic!("invalid argon2 parameters"),
};

/// Why a password was refused or could not be hashed. Policy messages are written for the person
/// choosing the password and never echo it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    #[error("the password must be at least {min} characters long (it has {len})")]
    TooShort { len: usize, min: usize },
    #[error("the password must be at most {max} characters long (it has {len})")]
    TooLong { len: usize, max: usize },
    #[error(
        "this password is too common; choose a longer passphrase, for example several unrelated words"
    )]
    Common,
    #[error("the password must not contain the username")]
    ContainsUsername,
    #[error(
        "the password is a repeated or sequential pattern (like \"aaaa...\", \"abcabc...\" or \"1234...\"); choose a passphrase, for example several unrelated words"
    )]
    Trivial,
    /// The strength estimator's verdict, with its advice (e.g. "This is similar to a commonly
    /// used password. Add another word or two. Uncommon words are better.").
    #[error("this password is too easy to guess. {advice}")]
    Weak { advice: String },
    #[error("could not get random bytes from the operating system: {0}")]
    Random(#[source] rand::Error),
    #[error("could not hash the password: {0}")]
    Hash(#[from] argon2::password_hash::Error),
}

impl From<argon2::Error> for PasswordError {
    fn from(e: argon2::Error) -> Self {
        Self::Hash(e.into())
    }
}

impl PasswordError {
    /// True when the password broke the policy (the user should pick another one), false for
    /// internal failures (random source, hashing) that are not the user's doing.
    pub fn is_policy_violation(&self) -> bool {
        matches!(
            self,
            Self::TooShort { .. }
                | Self::TooLong { .. }
                | Self::Common
                | Self::ContainsUsername
                | Self::Trivial
                | Self::Weak { .. }
        )
    }
}

/// Lowercase, one per line. Kept beside the estimator: it holds phrases and site-specific words
/// (plant, vendor and product terms) that zxcvbn's English frequency lists do not know, and
/// answers with a short, plain message for the ones people try most.
const COMMON_PASSWORDS_TXT: &str = include_str!("common-passwords.txt");

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON_PASSWORDS_TXT
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// The password as it is checked, hashed and compared: NFKC (compatibility composition), so
/// full-width letters, ligatures and composed or decomposed accents typed on different keyboards
/// give the same bytes. Wiped when dropped.
pub fn normalize(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

/// Checks a newly chosen password against the policy. `username` is the account's login name;
/// `context` holds other words an attacker would try first for this account (the plant's name,
/// the site): the estimator treats them as known words.
///
/// Rules, in order, on the NFKC form: at most [`MAX_LEN`] characters; at least [`MIN_LEN`]
/// characters once leading and trailing whitespace is ignored (so padding with spaces does not
/// count); not on the shipped common list (case-insensitive, also with inner whitespace removed,
/// also repeated); not equal to or containing the username when it has 3 characters or more
/// (case-insensitive); not a short pattern repeated or a run of consecutive digits or letters;
/// a zxcvbn score of at least [`MIN_SCORE`] with the username, `context` and "portcullis" as
/// user inputs.
pub fn check_policy(password: &str, username: &str, context: &[&str]) -> Result<(), PasswordError> {
    let password = normalize(password);
    let total = password.chars().count();
    if total > MAX_LEN {
        return Err(PasswordError::TooLong {
            len: total,
            max: MAX_LEN,
        });
    }
    let trimmed = password.trim();
    let len = trimmed.chars().count();
    if len < MIN_LEN {
        return Err(PasswordError::TooShort { len, min: MIN_LEN });
    }

    // Copies of the password are wiped when dropped.
    let lower = Zeroizing::new(trimmed.to_lowercase());
    let chars = Zeroizing::new(lower.chars().collect::<Vec<char>>());

    if is_common(&lower, &chars) {
        return Err(PasswordError::Common);
    }
    let user = username.trim().to_lowercase();
    if user.chars().count() >= 3 && lower.contains(&user) {
        return Err(PasswordError::ContainsUsername);
    }
    if is_trivial(&chars) {
        return Err(PasswordError::Trivial);
    }
    estimate(trimmed, username, context)
}

/// zxcvbn's score with this account's own words as user inputs; below [`MIN_SCORE`] is refused
/// with zxcvbn's warning and suggestions.
fn estimate(password: &str, username: &str, context: &[&str]) -> Result<(), PasswordError> {
    let prefix = Zeroizing::new(password.chars().take(ESTIMATE_CHARS).collect::<String>());
    // Whole names and their words ("Plant Two Bremen", "bremen"): either may be typed.
    let mut inputs: Vec<String> = vec![username.to_lowercase(), "portcullis".into()];
    for text in context {
        let lower = text.trim().to_lowercase();
        inputs.extend(
            lower
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= 3)
                .map(str::to_owned),
        );
        inputs.push(lower);
    }
    inputs.retain(|w| !w.is_empty());
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut entropy = zxcvbn::zxcvbn(&prefix, &inputs);
    if u8::from(entropy.score()) >= MIN_SCORE {
        // zxcvbn scores "Password123456789!" 3: a weak word plus a digit run plus a symbol
        // multiply to many guesses, but people (and cracking rules) pad a weak word exactly so.
        // The word without the digits and symbols at its ends must be strong by itself.
        let core = prefix.trim_matches(|c: char| !c.is_alphabetic());
        if core.len() == prefix.len() {
            return Ok(());
        }
        entropy = zxcvbn::zxcvbn(core, &inputs);
        if u8::from(entropy.score()) >= MIN_SCORE {
            return Ok(());
        }
    }
    let mut advice: Vec<String> = Vec::new();
    if let Some(feedback) = entropy.feedback() {
        advice.extend(feedback.warning().map(|w| w.to_string()));
        advice.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if advice.is_empty() {
        advice.push("Use a few words, avoid common phrases.".into());
    }
    Err(PasswordError::Weak {
        advice: advice.join(" "),
    })
}

fn is_common(lower: &str, chars: &[char]) -> bool {
    if COMMON_PASSWORDS.contains(lower) {
        return true;
    }
    // "correct horse battery staple" is the listed "correcthorsebatterystaple".
    let squeezed = Zeroizing::new(
        lower
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>(),
    );
    if COMMON_PASSWORDS.contains(squeezed.as_str()) {
        return true;
    }
    // "dragondragondragon": a listed password repeated.
    smallest_period(chars).is_some_and(|period| {
        let unit = Zeroizing::new(chars[..period].iter().collect::<String>());
        COMMON_PASSWORDS.contains(unit.as_str())
    })
}

/// A short unit repeated (its guessing cost is the unit's, below the minimum length), or an
/// ascending or descending run of digits or letters.
fn is_trivial(chars: &[char]) -> bool {
    smallest_period(chars).is_some_and(|period| period < MIN_LEN) || is_run(chars)
}

/// The smallest `p` such that `chars` is its first `p` characters repeated at least twice (the
/// last repetition may be cut short), e.g. 3 for "abcabcab". None when there is no such `p`.
fn smallest_period(chars: &[char]) -> Option<usize> {
    (1..=chars.len() / 2).find(|&p| (p..chars.len()).all(|i| chars[i] == chars[i - p]))
}

/// "123456789012345", "zyxwvu...": all digits or all ASCII letters, each one after (or before) the
/// previous, wrapping 9 -> 0 and z -> a like a keyboard row does.
fn is_run(chars: &[char]) -> bool {
    let (base, modulus) = if chars.iter().all(char::is_ascii_digit) {
        ('0', 10)
    } else if chars.iter().all(char::is_ascii_lowercase) {
        ('a', 26)
    } else {
        return false;
    };
    let index = |c: char| (u32::from(c) - u32::from(base)) % modulus;
    [1, modulus - 1].into_iter().any(|step| {
        chars
            .windows(2)
            .all(|w| index(w[1]) == (index(w[0]) + step) % modulus)
    })
}

/// Blocks (1 KiB each) one computation with today's parameters needs.
const BLOCKS: usize = PARAMS.block_count();

/// A fixed set of argon2 block buffers, reused by every hash and verification, so that memory
/// stays at `slots` x 19 MiB however many logins arrive (see the module doc). Give it as many
/// slots as computations may run at once (the service's argon2 semaphore); a caller beyond that
/// gets a buffer for the one call, which works but is what the pool is there to avoid.
#[derive(Debug)]
pub struct HashPool {
    free: Mutex<Vec<Box<[Block]>>>,
    slots: usize,
}

impl HashPool {
    /// A pool that keeps up to `slots` buffers (at least one). A buffer is made the first time
    /// a computation finds none free, and kept afterwards: with at most `slots` computations at
    /// once, the pool makes `slots` buffers in its life and the memory stays at that.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            free: Mutex::new(Vec::with_capacity(slots)),
            slots,
        }
    }

    /// Runs `work` with a buffer of at least `blocks` blocks from the pool.
    fn with_buffer<R>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> R) -> R {
        let pooled = if blocks <= BLOCKS {
            self.lock().pop()
        } else {
            None
        };
        // No free buffer (the first calls, or more callers at once than ever before), or a
        // stored hash stronger than today's parameters (a buffer for this call only).
        let mut buffer = pooled.unwrap_or_else(|| new_buffer(blocks.max(BLOCKS)));
        let result = work(&mut buffer[..blocks]);
        let mut free = self.lock();
        if buffer.len() == BLOCKS && free.len() < self.slots {
            free.push(buffer);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<[Block]>>> {
        // A panic while holding the lock cannot leave the list half-changed (push and pop only).
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hashes a password (NFKC first) with argon2id ([`M_COST_KIB`], [`T_COST`], [`P_COST`]) and
    /// a random [`SALT_LEN`]-byte salt from the operating system. Returns a PHC string. Does not
    /// check the policy: call [`check_policy`] first when the password is being chosen.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let mut salt = [0u8; SALT_LEN];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(PasswordError::Random)?;
        self.hash_with_salt(&normalize(password), &salt)
    }

    fn hash_with_salt(&self, password: &str, salt: &[u8]) -> Result<String, PasswordError> {
        let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
        self.with_buffer(BLOCKS, |blocks| {
            argon2id().hash_password_into_with_memory(password.as_bytes(), salt, &mut *out, blocks)
        })?;
        let salt = SaltString::encode_b64(salt)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&PARAMS)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&*out)?),
        };
        Ok(phc.to_string())
    }

    /// True when `password` (NFKC first) matches the PHC string `phc`, using the algorithm,
    /// version and parameters stored in `phc`. False when it does not match or `phc` is
    /// malformed or not an argon2 hash. The comparison is constant-time (`subtle`).
    ///
    /// A hash made before passwords were normalised holds the text as typed: when the NFKC form
    /// differs from it and does not match, the text as typed is tried too, so such a password
    /// keeps working (the next password change stores the NFKC form).
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        let normal = normalize(password);
        self.verify_exact(&normal, phc) || (*normal != password && self.verify_exact(password, phc))
    }

    fn verify_exact(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Ok(algorithm), Some(expected), Some(salt)) = (
            Algorithm::try_from(parsed.algorithm),
            parsed.hash,
            parsed.salt,
        ) else {
            return false;
        };
        // A missing version reads as the argon2 crate's default (0x13), as its own verifier did
        // before the pool; `needs_rehash` flags such hashes.
        let version = match parsed.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let blocks = params.block_count();
        let argon = Argon2::new(algorithm, version, params);
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        let hashed = self.with_buffer(blocks, |memory| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        });
        hashed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
    }

    /// Does the work of [`HashPool::verify`] against a hash with the current parameters and
    /// throws the result away. Call it when the username is unknown (or the account locked), so
    /// that it costs the same time as a wrong password and response times do not reveal which
    /// accounts exist.
    pub fn verify_dummy(&self, password: &str) {
        match DUMMY_HASH.as_deref() {
            Some(phc) => {
                std::hint::black_box(self.verify_exact(&normalize(password), phc));
            }
            // Unreachable with valid constant parameters and salt; still spend the same work.
            None => {
                let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
                let result = self.with_buffer(BLOCKS, |blocks| {
                    argon2id().hash_password_into_with_memory(
                        password.as_bytes(),
                        &DUMMY_SALT,
                        &mut *out,
                        blocks,
                    )
                });
                std::hint::black_box(result.is_ok());
            }
        }
    }
}

/// A zeroed buffer of `blocks` blocks (1 KiB each).
fn new_buffer(blocks: usize) -> Box<[Block]> {
    vec![Block::new(); blocks].into_boxed_slice()
}

fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
}

/// The pool behind the free functions below, for one-off use (tests, tools). A service makes its
/// own [`HashPool`] sized to its concurrency bound.
static SHARED: LazyLock<HashPool> = LazyLock::new(|| HashPool::new(1));

/// [`HashPool::hash`] on a one-slot shared pool.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    SHARED.hash(password)
}

/// [`HashPool::verify`] on a one-slot shared pool.
pub fn verify(password: &str, phc: &str) -> bool {
    SHARED.verify(password, phc)
}

/// [`HashPool::verify_dummy`] on a one-slot shared pool.
pub fn verify_dummy(password: &str) {
    SHARED.verify_dummy(password)
}

/// Hash with the current parameters of a password nobody knows, built at first use. A fixed salt
/// is fine: it is never compared against a real credential.
/// Made once with a pool of its own that is dropped afterwards, so no buffer stays behind for it.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    HashPool::new(1)
        .hash_with_salt("portcullis dummy password (unused)", &DUMMY_SALT)
        .ok()
});
const DUMMY_SALT: [u8; SALT_LEN] = *b"portcullis-dummy";

/// Builds the hash used by [`HashPool::verify_dummy`] now rather than on the first unknown
/// login.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
    LazyLock::force(&COMMON_PASSWORDS);
}

/// True when `phc` should be replaced by a fresh [`hash`] of the password (typically right after a
/// successful [`verify`], while the plaintext is at hand): it is not argon2id version 0x13, its
/// memory or time cost is below the current constants, its lane count differs, or its salt or
/// output is shorter than ours. Malformed strings also answer true.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    if Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id) {
        return true;
    }
    // A missing version means 0x10 to the reference implementation but 0x13 to the argon2
    // crate: ambiguous, so rehash.
    if parsed.version != Some(u32::from(Version::V0x13)) {
        return true;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    if params.m_cost() < M_COST_KIB || params.t_cost() < T_COST || params.p_cost() != P_COST {
        return true;
    }
    let mut salt_buf = [0u8; 64];
    let salt_ok = parsed
        .salt
        .and_then(|salt| salt.decode_b64(&mut salt_buf).ok())
        .is_some_and(|salt| salt.len() >= SALT_LEN);
    let output_ok = parsed.hash.is_some_and(|out| out.len() >= OUTPUT_LEN);
    !(salt_ok && output_ok)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    const GOOD: &str = "marmalade tractor lighthouse";

    fn refused(password: &str) -> PasswordError {
        check_policy(password, "alice", &[]).expect_err(password)
    }

    #[test]
    fn accepts_a_plain_passphrase_without_composition_rules() {
        check_policy(GOOD, "alice", &[]).unwrap();
        check_policy("nodigitsnosymbolsatall", "alice", &[]).unwrap();
        // Exactly the minimum.
        check_policy("strawberry jams", "alice", &[]).unwrap();
    }

    #[test]
    fn too_short_counts_characters_not_bytes() {
        let fourteen = "é".repeat(7) + "ü".repeat(7).as_str(); // 28 bytes, 14 chars
        match check_policy(&fourteen, "alice", &[]) {
            Err(PasswordError::TooShort { len: 14, min: 15 }) => {}
            other => panic!("{other:?}"),
        }
        check_policy("ééééé üüüüü ççç", "alice", &[]).unwrap();
    }

    #[test]
    fn too_short_message_is_readable() {
        assert_eq!(
            refused("short one").to_string(),
            "the password must be at least 15 characters long (it has 9)"
        );
    }

    #[test]
    fn padding_with_spaces_does_not_count() {
        match check_policy("   short one     ", "alice", &[]) {
            Err(PasswordError::TooShort { len: 9, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_long_is_refused_at_257() {
        let words = "marmalade tractor lighthouse ";
        let ok: String = words.chars().cycle().take(MAX_LEN).collect();
        check_policy(ok.trim_end(), "alice", &[]).unwrap();
        let long: String = words.chars().cycle().take(MAX_LEN + 1).collect();
        match check_policy(&long, "alice", &[]) {
            Err(PasswordError::TooLong { len: 257, max: 256 }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn common_passwords_are_refused_case_insensitively_after_trimming() {
        for p in [
            "passwordpassword",
            "PasswordPassword",
            "  QWERTYUIOPASDFGH  ",
            "iloveyouiloveyou",
            "123456789qwerty",
            "correcthorsebatterystaple",
            "Correct Horse Battery Staple",
            "portcullispassword",
        ] {
            assert!(
                matches!(refused(p), PasswordError::Common),
                "{p} not refused as common"
            );
        }
        assert_eq!(
            refused("passwordpassword").to_string(),
            "this password is too common; choose a longer passphrase, for example several unrelated words"
        );
    }

    #[test]
    fn a_common_password_repeated_is_common() {
        assert!(matches!(
            refused("dragondragondragon"),
            PasswordError::Common
        ));
        assert!(matches!(
            refused("letmein!letmein!letmein!"),
            PasswordError::Trivial | PasswordError::Common
        ));
    }

    #[test]
    fn username_inside_the_password_is_refused() {
        let err = check_policy("my name is Alice Smith", "alice", &[]).unwrap_err();
        assert!(matches!(err, PasswordError::ContainsUsername));
        assert_eq!(
            err.to_string(),
            "the password must not contain the username"
        );
        // Equal to the username.
        assert!(matches!(
            check_policy("maintenance-vendor-7", "Maintenance-Vendor-7", &[]),
            Err(PasswordError::ContainsUsername)
        ));
        // A two-letter username is too short to be meaningful.
        check_policy("the albatross flies south", "al", &[]).unwrap();
        // The same password is fine for another user.
        check_policy("my name is Alice Smith", "bob", &[]).unwrap();
    }

    #[test]
    fn repeated_and_sequential_patterns_are_refused() {
        for p in [
            "aaaaaaaaaaaaaaa",
            "123456789012345",
            "543210987654321",
            "abcdefghijklmnop",
            "ABCDEFGHIJKLMNOP",
            "zyxwvutsrqponmlk",
            "xyzabcdefghijklm",
            "abababababababab",
            "abcabcabcabcabcab",
            "sunflower!sunflower!",
        ] {
            let chars: Vec<char> = p.to_lowercase().chars().collect();
            assert!(is_trivial(&chars), "{p:?} not seen as trivial");
            // Some are also on the common list, which is checked first.
            assert!(
                matches!(refused(p), PasswordError::Trivial | PasswordError::Common),
                "{p:?} not refused"
            );
        }
        let err = refused("123456789012345");
        assert!(matches!(err, PasswordError::Trivial));
        assert!(
            err.to_string()
                .starts_with("the password is a repeated or sequential pattern")
        );
    }

    #[test]
    fn near_patterns_and_long_repeats_are_allowed() {
        // Not a run: one step breaks it (the estimator still finds it weak).
        assert!(!is_run(&"123456789012346".chars().collect::<Vec<_>>()));
        // Starts and ends with the same letter: not a repetition.
        check_policy("strawberry jams", "alice", &[]).unwrap();
        // A strong 15+ character passphrase typed twice keeps the strength of one copy.
        check_policy(&format!("{GOOD} {GOOD}"), "alice", &[]).unwrap();
    }

    #[test]
    fn common_list_is_clean_and_substantial() {
        let mut seen = HashSet::new();
        for line in COMMON_PASSWORDS_TXT.lines() {
            assert!(!line.is_empty(), "blank line in the list");
            assert_eq!(line, line.trim(), "untrimmed entry {line:?}");
            assert_eq!(line, line.to_lowercase(), "entry not lowercase {line:?}");
            assert!(seen.insert(line), "duplicate entry {line:?}");
        }
        assert!(seen.len() >= 500, "only {} entries", seen.len());
        let long = seen.iter().filter(|p| p.chars().count() >= MIN_LEN).count();
        assert!(long >= 200, "only {long} entries of policy length");
        assert_eq!(COMMON_PASSWORDS.len(), seen.len());
    }

    #[test]
    fn policy_errors_are_policy_violations_and_hash_errors_are_not() {
        assert!(refused("short").is_policy_violation());
        let err = PasswordError::Hash(argon2::password_hash::Error::SaltInvalid(
            argon2::password_hash::errors::InvalidValue::TooShort,
        ));
        assert!(!err.is_policy_violation());
    }

    #[test]
    fn hash_is_argon2id_phc_with_the_current_params_and_random_salt() {
        let a = hash(GOOD).unwrap();
        let b = hash(GOOD).unwrap();
        assert!(
            a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC {a}"
        );
        assert_ne!(a, b, "two hashes of one password share a salt");
        let parsed = PasswordHash::new(&a).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(parsed.salt.unwrap().decode_b64(&mut buf).unwrap().len(), 16);
        assert_eq!(parsed.hash.unwrap().len(), OUTPUT_LEN);
        assert!(!needs_rehash(&a));
    }

    #[test]
    fn params_meet_the_security_floor() {
        const { assert!(M_COST_KIB >= 19 * 1024 && T_COST >= 2 && P_COST == 1) };
        const { assert!(SALT_LEN >= 16 && OUTPUT_LEN >= 32) };
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        let phc = hash(GOOD).unwrap();
        assert!(verify(GOOD, &phc));
        assert!(!verify("marmalade tractor lighthousE", &phc));
        assert!(!verify("", &phc));
        // No trimming at verification: the password is what was hashed.
        assert!(!verify(&format!("{GOOD} "), &phc));
    }

    #[test]
    fn verify_is_false_on_malformed_hashes() {
        let phc = hash(GOOD).unwrap();
        for bad in [
            "",
            "garbage",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            &phc[..phc.len() - 10],
            &phc.replace("argon2id", "scrypt"),
            &phc.replace("m=19456", "m=abc"),
        ] {
            assert!(!verify(GOOD, bad), "accepted {bad:?}");
        }
    }

    fn hash_with(alg: Algorithm, version: Version, m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        Argon2::new(alg, version, params)
            .hash_password(GOOD.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn weaker_hashes_still_verify_but_need_rehash() {
        let cases = [
            hash_with(Algorithm::Argon2id, Version::V0x13, 4096, 2, 1),
            hash_with(Algorithm::Argon2id, Version::V0x13, M_COST_KIB, 1, 1),
            hash_with(Algorithm::Argon2id, Version::V0x13, M_COST_KIB, 2, 2),
            hash_with(Algorithm::Argon2i, Version::V0x13, M_COST_KIB, 2, 1),
            hash_with(Algorithm::Argon2id, Version::V0x10, M_COST_KIB, 2, 1),
        ];
        for phc in &cases {
            assert!(verify(GOOD, phc), "did not verify {phc}");
            assert!(needs_rehash(phc), "no rehash for {phc}");
        }
        // Stronger than today's constants: keep.
        let stronger = hash_with(Algorithm::Argon2id, Version::V0x13, M_COST_KIB * 2, 3, 1);
        assert!(verify(GOOD, &stronger));
        assert!(!needs_rehash(&stronger));
        assert!(needs_rehash("garbage"));
    }

    #[test]
    fn short_salt_needs_rehash() {
        let salt = SaltString::encode_b64(&[7u8; 8]).unwrap();
        let phc = argon2id()
            .hash_password(GOOD.as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(verify(GOOD, &phc));
        assert!(needs_rehash(&phc));
    }

    #[test]
    fn dummy_hash_costs_as_much_as_a_current_hash() {
        warm_up();
        let dummy = DUMMY_HASH.as_deref().expect("dummy hash was built");
        // Same algorithm and parameters as a fresh hash, so the same work per verify.
        assert!(!needs_rehash(dummy));
        let fresh = hash(GOOD).unwrap();
        let params_of = |phc: &str| {
            let parsed = PasswordHash::new(phc).unwrap();
            (
                parsed.algorithm.to_string(),
                parsed.version,
                Params::try_from(&parsed).unwrap(),
            )
        };
        assert_eq!(params_of(dummy), params_of(&fresh));
        assert!(!verify(GOOD, dummy));
        verify_dummy(GOOD);
    }

    /// Issue 12: these passed the old list; the estimator refuses them.
    #[test]
    fn common_passwords_that_meet_the_length_are_refused() {
        let accepted = [
            "Password123456789!",
            "P@ssw0rd12345678",
            "Password1234567890",
            "Qwerty123456789!",
            "Welcome2024Welcome",
            "iloveyou12345678",
            "Passw0rd!Passw0rd!",
            "Football123456789",
            "Monkey1234567890!",
            "Dragon!!123456789",
            "Sunshine12345678!",
            "Letmein123456789!",
            "Baseball!2345678",
            "Administrator2024!",
        ]
        .into_iter()
        .filter(|p| check_policy(p, "alice", &[]).is_ok())
        .collect::<Vec<_>>();
        assert!(accepted.is_empty(), "accepted: {accepted:?}");
        let err = check_policy("Password123456789!", "alice", &[]).unwrap_err();
        assert!(matches!(err, PasswordError::Weak { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("this password is too easy to guess. "),
            "{text}"
        );
        assert!(
            text.len() > "this password is too easy to guess. ".len() + 10,
            "{text}"
        );
    }

    #[test]
    fn good_passphrases_pass_the_estimator() {
        for p in [
            "marmalade tractor lighthouse",
            "violet kettle under the quarry",
            "purple-otter-sings-quietly",
            "Brass lantern swims east at dawn",
            "correct horse plant seven",
            "long enough and not on any list",
        ] {
            check_policy(p, "alice", &[]).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn username_and_plant_name_based_passwords_are_refused() {
        // The plant's name as context: fine elsewhere, weak here.
        let plant = ["Riverside Bottling"];
        let p = "RiversideBottling2024";
        let err = check_policy(p, "alice", &plant).unwrap_err();
        assert!(matches!(err, PasswordError::Weak { .. }), "{err:?}");
        check_policy("marmalade tractor lighthouse", "alice", &plant).unwrap();
    }

    #[test]
    fn nfkc_makes_keyboards_agree() {
        // Full-width letters (an East Asian input method) are the ASCII passphrase.
        let ascii = "marmalade tractor lighthouse";
        let wide: String = ascii
            .chars()
            .map(|c| match c {
                ' ' => '\u{3000}',
                c => char::from_u32(u32::from(c) - 0x21 + 0xFF01).unwrap(),
            })
            .collect();
        assert_ne!(wide, ascii);
        assert_eq!(*normalize(&wide), ascii);
        let phc = hash(&wide).unwrap();
        assert!(verify(ascii, &phc), "set full-width, typed ASCII");
        let phc = hash(ascii).unwrap();
        assert!(verify(&wide, &phc), "set ASCII, typed full-width");
        // A composed é (U+00E9) and e + combining acute (U+0301).
        let composed = "caf\u{e9} cr\u{e8}me tractor lighthouse";
        let decomposed = "cafe\u{301} cre\u{300}me tractor lighthouse";
        assert_eq!(normalize(composed), normalize(decomposed));
        let phc = hash(composed).unwrap();
        assert!(verify(decomposed, &phc));
        assert!(!verify("cafe creme tractor lighthouse", &phc));
        // The policy counts the normal form: 15 decomposed é are 15 characters, not 30.
        let fifteen = "e\u{301}".repeat(15);
        assert!(matches!(
            check_policy(&fifteen, "alice", &[]),
            Err(PasswordError::Trivial)
        ));
    }

    #[test]
    fn a_hash_of_the_text_as_typed_still_verifies() {
        // Stored before normalisation: the decomposed bytes themselves.
        let decomposed = "cafe\u{301} tractor lighthouse";
        let salt = SaltString::encode_b64(&[9u8; 16]).unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
            .hash_password(decomposed.as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(verify(decomposed, &old));
    }

    #[test]
    fn the_pool_reuses_its_buffers() {
        let pool = HashPool::new(2);
        let phc = pool.hash(GOOD).unwrap();
        for _ in 0..3 {
            assert!(pool.verify(GOOD, &phc));
            assert!(!pool.verify("not the password at all", &phc));
            pool.verify_dummy(GOOD);
        }
        // One computation at a time needs one buffer, and it is always the same one.
        let first = pool.with_buffer(BLOCKS, |b| b.as_ptr());
        assert_eq!(pool.with_buffer(BLOCKS, |b| b.as_ptr()), first);
        let free = pool.lock();
        assert_eq!(free.len(), 1, "the buffer came back, no other was kept");
        assert!(free.iter().all(|b| b.len() == BLOCKS));
    }

    #[test]
    fn the_pool_agrees_with_the_argon2_crate() {
        let pool = HashPool::new(1);
        let phc = pool.hash(GOOD).unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(GOOD.as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
    }
}
