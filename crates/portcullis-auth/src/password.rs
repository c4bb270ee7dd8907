//! Passwords: the choice policy (NIST SP 800-63B) and argon2id hashing.
//!
//! The policy has a length floor and ceiling, refuses common, username-based and trivially
//! patterned passwords, and has no composition rules ("one digit, one symbol"): those make
//! passwords harder to remember without making them harder to guess.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so the parameters
//! travel with each hash and can be raised later: [`needs_rehash`] says when a stored hash is
//! weaker than what [`hash`] produces today.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Minimum length in characters (Unicode scalar values), not counting leading and trailing
/// whitespace. SECURITY.md: "minimum length 15".
pub const MIN_LEN: usize = 15;
/// Maximum length in characters. Long enough for any passphrase; the cap bounds the work an
/// anonymous client can make us do per attempt.
pub const MAX_LEN: usize = 256;

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
    #[error("could not get random bytes from the operating system: {0}")]
    Random(#[source] rand::Error),
    #[error("could not hash the password: {0}")]
    Hash(#[from] argon2::password_hash::Error),
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
        )
    }
}

/// Lowercase, one per line. Includes short classics (harmless: the length rule already refuses
/// them) and the long ones that pass the length rule: keyboard walks, doubled words, phrases.
const COMMON_PASSWORDS_TXT: &str = include_str!("common-passwords.txt");

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON_PASSWORDS_TXT
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Checks a newly chosen password against the policy. `username` is the account's login name.
///
/// Rules, in order: at most [`MAX_LEN`] characters; at least [`MIN_LEN`] characters once leading
/// and trailing whitespace is ignored (so padding with spaces does not count); not a common
/// password (case-insensitive, also with inner whitespace removed, also repeated); not equal to
/// or containing the username when it has 3 characters or more (case-insensitive); not a short
/// pattern repeated or a run of consecutive digits or letters.
pub fn check_policy(password: &str, username: &str) -> Result<(), PasswordError> {
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
    Ok(())
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

fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
}

/// Hashes a password with argon2id ([`M_COST_KIB`], [`T_COST`], [`P_COST`]) and a random
/// [`SALT_LEN`]-byte salt from the operating system. Returns a PHC string. Does not check the
/// policy: call [`check_policy`] first when the password is being chosen.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng
        .try_fill_bytes(&mut salt)
        .map_err(PasswordError::Random)?;
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &[u8]) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(salt)?;
    Ok(argon2id()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `password` matches the PHC string `phc`, using the parameters stored in `phc`.
/// False when it does not match or `phc` is malformed or not an argon2 hash. The hash comparison
/// is constant-time (argon2's `Output` equality).
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The algorithm, version and parameters come from `parsed`, not from this instance.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Hash with the current parameters of a password nobody knows, built at first use. A fixed salt
/// is fine: it is never compared against a real credential.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_with_salt("portcullis dummy password (unused)", &DUMMY_SALT).ok());
const DUMMY_SALT: [u8; SALT_LEN] = *b"portcullis-dummy";

/// Does the work of [`verify`] against a hash with the current parameters and throws the result
/// away. Call it when the username is unknown, so that an unknown user costs the same time as a
/// wrong password and response times do not reveal which accounts exist.
///
/// The first call also builds the dummy hash; call [`warm_up`] at startup so the first unknown
/// user is not slower than the rest.
pub fn verify_dummy(password: &str) {
    match DUMMY_HASH.as_deref() {
        Some(phc) => {
            std::hint::black_box(verify(password, phc));
        }
        // Unreachable with valid constant parameters and salt; still spend the same work.
        None => {
            let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
            let result = argon2id().hash_password_into(password.as_bytes(), &DUMMY_SALT, &mut *out);
            std::hint::black_box(result.is_ok());
        }
    }
}

/// Builds the hash used by [`verify_dummy`] now rather than on the first unknown login.
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

    use super::*;

    const GOOD: &str = "marmalade tractor lighthouse";

    fn refused(password: &str) -> PasswordError {
        check_policy(password, "alice").expect_err(password)
    }

    #[test]
    fn accepts_a_plain_passphrase_without_composition_rules() {
        check_policy(GOOD, "alice").unwrap();
        check_policy("nodigitsnosymbolsatall", "alice").unwrap();
        // Exactly the minimum.
        check_policy("strawberry jams", "alice").unwrap();
    }

    #[test]
    fn too_short_counts_characters_not_bytes() {
        let fourteen = "é".repeat(7) + "ü".repeat(7).as_str(); // 28 bytes, 14 chars
        match check_policy(&fourteen, "alice") {
            Err(PasswordError::TooShort { len: 14, min: 15 }) => {}
            other => panic!("{other:?}"),
        }
        check_policy("ééééé üüüüü ççç", "alice").unwrap();
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
        match check_policy("   short one     ", "alice") {
            Err(PasswordError::TooShort { len: 9, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_long_is_refused_at_257() {
        let words = "marmalade tractor lighthouse ";
        let ok: String = words.chars().cycle().take(MAX_LEN).collect();
        check_policy(ok.trim_end(), "alice").unwrap();
        let long: String = words.chars().cycle().take(MAX_LEN + 1).collect();
        match check_policy(&long, "alice") {
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
        let err = check_policy("my name is Alice Smith", "alice").unwrap_err();
        assert!(matches!(err, PasswordError::ContainsUsername));
        assert_eq!(
            err.to_string(),
            "the password must not contain the username"
        );
        // Equal to the username.
        assert!(matches!(
            check_policy("maintenance-vendor-7", "Maintenance-Vendor-7"),
            Err(PasswordError::ContainsUsername)
        ));
        // A two-letter username is too short to be meaningful.
        check_policy("the albatross flies south", "al").unwrap();
        // The same password is fine for another user.
        check_policy("my name is Alice Smith", "bob").unwrap();
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
        // Not a run: one step breaks it.
        check_policy("123456789012346", "alice").unwrap();
        // Starts and ends with the same letter: not a repetition.
        check_policy("strawberry jams", "alice").unwrap();
        // A strong 15+ character passphrase typed twice keeps the strength of one copy.
        check_policy(&format!("{GOOD} {GOOD}"), "alice").unwrap();
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
}
