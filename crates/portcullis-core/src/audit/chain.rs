//! The chain: digests, the MAC key, the head, and the verifier.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::event::{AuditEvent, EventView};
use crate::{Timestamp, ValidationError};

/// A SHA-256 (or HMAC-SHA256) value, stored as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// `prev_hash` of the first event.
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case), as `hex::decode_to_slice` does, with a table and no
    /// branch per digit: `audit verify` parses three digests per event.
    pub fn from_hex(text: &str) -> Result<Self, ValidationError> {
        /// Value of each hex digit; 0xff marks a byte that is not one.
        const NIBBLE: [u8; 256] = {
            let mut t = [0xff; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                t[b'A' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        let digits = text.as_bytes();
        let mut out = [0u8; 32];
        // Any non-digit sets the high bits of `seen`.
        let mut seen = 0u8;
        if digits.len() == 64 {
            for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
                let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
                seen |= hi | lo;
                *o = (hi << 4) | lo;
            }
        }
        if digits.len() != 64 || seen > 0x0f {
            return Err(ValidationError::new(
                "hash",
                format!("'{text}' is not 64 hex digits"),
            ));
        }
        Ok(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The secret behind every event's MAC. Kept in a file outside the database, so whoever can
/// rewrite the table still cannot forge a row that verifies.
#[derive(Clone)]
pub struct MacKey {
    /// HMAC keyed with the secret and fed the domain tag, ready for the hash: cloning it per event
    /// skips re-deriving the padded key (two of the five SHA-256 blocks an HMAC costs).
    keyed: Hmac<Sha256>,
}

const MAC_DOMAIN: &[u8] = b"portcullis.audit.mac.v1\0";

impl MacKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        // Invariant: HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let mut keyed = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        keyed.update(MAC_DOMAIN);
        Self { keyed }
    }

    /// `HMAC-SHA256(key, "portcullis.audit.mac.v1\0" || hash)`.
    pub fn mac(&self, hash: &Digest) -> Digest {
        let mut m = self.keyed.clone();
        m.update(&hash.0);
        Digest(m.finalize().into_bytes().into())
    }

    /// Constant-time comparison against the stored MAC.
    fn verify(&self, hash: &Digest, mac: &Digest) -> bool {
        let mut m = self.keyed.clone();
        m.update(&hash.0);
        m.verify_slice(&mac.0).is_ok()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The last event of the chain (or the genesis position: seq 0, zero hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: Digest,
    pub ts: Timestamp,
}

impl ChainHead {
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: Digest::ZERO,
        ts: Timestamp::EPOCH,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The sequence skips this number: an event was deleted or rows were reordered.
    Missing { found: i64 },
    /// `prev_hash` does not name the previous event's hash.
    BrokenLink,
    /// The stored hash is not the hash of the stored fields: the row was edited.
    HashMismatch,
    /// The MAC does not match: the row was forged or rewritten by someone without the key.
    MacMismatch,
    /// The timestamp goes backwards.
    TimeReversed,
    /// A signed checkpoint names another hash at this position.
    CheckpointMismatch,
    /// A signed checkpoint covers events that are no longer there: the tail was cut off.
    Truncated { checkpoint_seq: i64 },
    /// The row could not be read at all (malformed hash, timestamp, ...).
    Malformed(String),
}

/// The first event at which the chain stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: BreakReason,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.reason {
            BreakReason::Missing { found } => format!("event missing (next present is {found})"),
            BreakReason::BrokenLink => "prev_hash does not match the previous event".into(),
            BreakReason::HashMismatch => "content does not match its hash (edited)".into(),
            BreakReason::MacMismatch => "MAC does not match (forged or rewritten)".into(),
            BreakReason::TimeReversed => "timestamp earlier than the previous event".into(),
            BreakReason::CheckpointMismatch => "differs from a signed checkpoint".into(),
            BreakReason::Truncated { checkpoint_seq } => {
                format!(
                    "missing: a signed checkpoint covers up to seq {checkpoint_seq} (tail truncated)"
                )
            }
            BreakReason::Malformed(m) => format!("unreadable row: {m}"),
        };
        write!(f, "first bad seq: {}: {}", self.seq, why)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    pub events: u64,
    pub head: ChainHead,
    pub checkpoints_checked: usize,
}

/// Checks events one at a time, in `seq` order, holding O(checkpoints) memory.
#[derive(Debug)]
pub struct ChainVerifier {
    key: Option<MacKey>,
    head: ChainHead,
    events: u64,
    /// seq -> hash that signed checkpoints vouch for.
    expected: BTreeMap<i64, Digest>,
    checked: usize,
}

impl ChainVerifier {
    /// `key`: verify MACs too (None when the verifier does not hold the key, e.g. an offline
    /// export). `checkpoints`: (seq, hash) pairs whose signatures the caller has already checked.
    pub fn new(key: Option<MacKey>, checkpoints: impl IntoIterator<Item = (i64, Digest)>) -> Self {
        Self {
            key,
            head: ChainHead::GENESIS,
            events: 0,
            expected: checkpoints.into_iter().collect(),
            checked: 0,
        }
    }

    pub fn push(&mut self, ev: &AuditEvent) -> Result<(), ChainBreak> {
        self.push_view(&ev.view())
    }

    /// [`ChainVerifier::push`] for an event read in place (no copy of its strings).
    pub fn push_view(&mut self, ev: &EventView<'_>) -> Result<(), ChainBreak> {
        let want = self.head.seq + 1;
        let fail = |reason| Err(ChainBreak { seq: want, reason });
        if ev.seq != want {
            return fail(BreakReason::Missing { found: ev.seq });
        }
        if ev.prev_hash != self.head.hash {
            return fail(BreakReason::BrokenLink);
        }
        if ev.compute_hash() != ev.hash {
            return fail(BreakReason::HashMismatch);
        }
        if let Some(key) = &self.key
            && !key.verify(&ev.hash, &ev.mac)
        {
            return fail(BreakReason::MacMismatch);
        }
        if ev.ts < self.head.ts {
            return fail(BreakReason::TimeReversed);
        }
        if let Some(h) = self.expected.get(&ev.seq) {
            if *h != ev.hash {
                return fail(BreakReason::CheckpointMismatch);
            }
            self.checked += 1;
        }
        self.head = ev.head();
        self.events += 1;
        Ok(())
    }

    /// Call after the last event: fails when a checkpoint lies beyond the end (a cut tail).
    pub fn finish(self) -> Result<VerifiedChain, ChainBreak> {
        if let Some((&cp_seq, _)) = self.expected.range(self.head.seq + 1..).next_back() {
            return Err(ChainBreak {
                seq: self.head.seq + 1,
                reason: BreakReason::Truncated {
                    checkpoint_seq: cp_seq,
                },
            });
        }
        Ok(VerifiedChain {
            events: self.events,
            head: self.head,
            checkpoints_checked: self.checked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parsing_accepts_exactly_64_hex_digits_of_either_case() {
        let lower = "00ff10a0b1c2d3e4f5a6b7c8d9eaf0123456789abcdef0123456789abcdef012";
        let d = Digest::from_hex(lower).unwrap();
        assert_eq!(d.to_hex(), lower);
        assert_eq!(Digest::from_hex(&lower.to_uppercase()).unwrap(), d);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(lower, &mut bytes).unwrap();
        assert_eq!(d.0, bytes);
        for bad in [
            "",
            "zz",
            &lower[..63],
            &format!("{lower}0"),
            &format!("{}g", &lower[..63]),
            &format!("{}é", &lower[..62]),
            &format!(" {}", &lower[..63]),
        ] {
            let e = Digest::from_hex(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                ValidationError::new("hash", format!("'{bad}' is not 64 hex digits")).to_string()
            );
        }
    }

    #[test]
    fn mac_is_hmac_sha256_over_the_domain_and_hash() {
        let key = MacKey::new([3; 32]);
        let hash = Digest([9; 32]);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&[3; 32]).unwrap();
        m.update(b"portcullis.audit.mac.v1\0");
        m.update(&hash.0);
        let want = Digest(m.finalize().into_bytes().into());
        assert_eq!(key.mac(&hash), want);
        assert!(key.verify(&hash, &want));
        assert!(!key.verify(&hash, &Digest([0; 32])));
        assert!(!MacKey::new([4; 32]).verify(&hash, &want));
        assert_eq!(format!("{key:?}"), "MacKey(<redacted>)");
    }
}
