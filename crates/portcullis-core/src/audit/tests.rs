use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;
use crate::Timestamp;

fn key() -> MacKey {
    MacKey::new([7; 32])
}

fn chain(n: i64) -> Vec<AuditEvent> {
    let mut head = ChainHead::GENESIS;
    (1..=n)
        .map(|i| {
            let d = AuditDraft::new(format!("user{i}"), ActorRole::Admin, "user.add")
                .target(format!("user:u{i}"))
                .details(serde_json::json!({ "i": i }));
            let ev = AuditEvent::seal(
                &head,
                &d,
                Timestamp::from_unix_micros(i * 1000).unwrap(),
                &key(),
            );
            head = ev.head();
            ev
        })
        .collect()
}

fn verify(
    events: &[AuditEvent],
    checkpoints: Vec<(i64, Digest)>,
) -> Result<VerifiedChain, ChainBreak> {
    let mut v = ChainVerifier::new(Some(key()), checkpoints);
    for e in events {
        v.push(e)?;
    }
    v.finish()
}

/// Recomputes hashes from `from` on, as an attacker who knows the (public) hash rule would.
fn rechain(events: &mut [AuditEvent], from: usize) {
    for i in from..events.len() {
        if i > 0 {
            events[i].prev_hash = events[i - 1].hash;
        }
        events[i].hash = events[i].compute_hash();
    }
}

#[test]
fn intact_chain_verifies() {
    let ev = chain(20);
    let v = verify(&ev, vec![]).unwrap();
    assert_eq!(v.events, 20);
    assert_eq!(v.head.seq, 20);
    assert_eq!(ev[0].prev_hash, Digest::ZERO);
}

#[test]
fn edited_field_is_named_even_when_the_attacker_rehashes() {
    let mut ev = chain(10);
    ev[4].details = r#"{"i":999}"#.into();
    assert_eq!(verify(&ev, vec![]).unwrap_err().seq, 5);
    rechain(&mut ev, 4);
    let err = verify(&ev, vec![]).unwrap_err();
    assert_eq!((err.seq, err.reason), (5, BreakReason::MacMismatch));
}

#[test]
fn deleted_row_is_named() {
    let mut ev = chain(10);
    ev.remove(3);
    let err = verify(&ev, vec![]).unwrap_err();
    assert_eq!(err.seq, 4);
    assert_eq!(err.reason, BreakReason::Missing { found: 5 });
}

#[test]
fn swapped_rows_are_named() {
    let mut ev = chain(10);
    let (a, b) = (ev[2].seq, ev[6].seq);
    ev.swap(2, 6);
    ev[2].seq = a;
    ev[6].seq = b;
    assert_eq!(verify(&ev, vec![]).unwrap_err().seq, 3);
}

#[test]
fn forged_row_is_named_even_when_correctly_chained() {
    let mut ev = chain(10);
    let forged = AuditDraft::new("mallory", ActorRole::Admin, "user.add");
    let f = AuditEvent::seal(&ev[4].head(), &forged, ev[4].ts, &MacKey::new([0; 32]));
    ev.insert(5, f);
    for (i, e) in ev.iter_mut().enumerate().skip(6) {
        e.seq = i as i64 + 1;
    }
    rechain(&mut ev, 5);
    let err = verify(&ev, vec![]).unwrap_err();
    assert_eq!((err.seq, err.reason), (6, BreakReason::MacMismatch));
}

#[test]
fn truncated_tail_is_caught_by_a_signed_checkpoint() {
    let sk = SigningKey::from_bytes(&[9; 32]);
    let mut ev = chain(10);
    let cp = Checkpoint::sign(&ev[9].head(), Timestamp::EPOCH, &sk);
    let vouched = cp.verify(&sk.verifying_key()).unwrap();
    ev.truncate(7);
    assert!(
        verify(&ev, vec![]).is_ok(),
        "without a checkpoint a cut tail looks whole"
    );
    let err = verify(&ev, vec![vouched]).unwrap_err();
    assert_eq!(err.seq, 8);
    assert_eq!(err.reason, BreakReason::Truncated { checkpoint_seq: 10 });
    assert!(err.to_string().starts_with("first bad seq: 8"));
}

#[test]
fn checkpoint_signature_and_fields_are_checked() {
    let sk = SigningKey::from_bytes(&[9; 32]);
    let ev = chain(3);
    let cp = Checkpoint::sign(&ev[2].head(), Timestamp::EPOCH, &sk);
    let other = SigningKey::from_bytes(&[8; 32]);
    assert_eq!(
        cp.verify(&other.verifying_key()),
        Err(CheckpointError::BadSignature)
    );
    let mut moved = cp.clone();
    moved.seq = 2;
    assert_eq!(
        moved.verify(&sk.verifying_key()),
        Err(CheckpointError::BadSignature)
    );
    let mut garbled = cp;
    garbled.hash = "zz".into();
    assert!(matches!(
        garbled.verify(&sk.verifying_key()),
        Err(CheckpointError::Malformed(_))
    ));
}

#[test]
fn timestamps_never_go_backwards() {
    let head = chain(1)[0].head();
    let ev = AuditEvent::seal(
        &head,
        &AuditDraft::new("a", ActorRole::System, "x"),
        Timestamp::EPOCH,
        &key(),
    );
    assert_eq!(ev.ts, head.ts);
}

#[test]
fn csv_cells_stay_on_one_line_and_defuse_formulas() {
    assert_eq!(csv_cell("a\nb\r\tc\u{1b}"), "a\\nb\\r\\tc\\u{1b}");
    assert_eq!(csv_cell("=cmd()"), "'=cmd()");
    assert_eq!(csv_cell("back\\slash"), "back\\\\slash");
    assert_eq!(
        csv_cell("a\u{2028}b\u{2029}c\u{85}d"),
        "a\\u{2028}b\\u{2029}c\\u{85}d"
    );
}

/// Issue 12: U+2028, U+2029 and U+0085 are line breaks to many readers; no export writes them
/// raw, and the JSONL record still parses back to the same text.
#[test]
fn exports_escape_unicode_line_breaks() {
    let sneaky = "vendor\u{2028}{\"seq\":1,\"action\":\"forged\"}\u{2029}x\u{85}y";
    let draft = AuditDraft::new(sneaky, ActorRole::Vendor, "request.create")
        .target(format!("device:{sneaky}"))
        .details(serde_json::json!({ "reason": sneaky }));
    let ev = AuditEvent::seal(&ChainHead::GENESIS, &draft, Timestamp::EPOCH, &key());
    let rec = ExportRecord::from(&ev);
    let breaks = ['\u{2028}', '\u{2029}', '\u{85}', '\n', '\r'];
    let line = rec.jsonl_line();
    assert!(!line.contains(breaks), "{line:?}");
    assert!(line.contains("\\u2028") && line.contains("\\u2029") && line.contains("\\u0085"));
    let back: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["actor"], sneaky);
    assert_eq!(back["details"]["reason"], sneaky);
    for cell in rec.csv_row() {
        assert!(!cell.contains(breaks), "{cell:?}");
    }
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(?s).{0,12}").unwrap()
}

/// Every character a reader may take as the end of a line.
const LINE_BREAKS: [char; 5] = ['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}'];

proptest! {
    /// Length-prefixing makes the encoding injective: moving bytes between fields changes it.
    #[test]
    fn canonical_encoding_is_injective(a in text(), b in text(), c in text(), d in text()) {
        let mk = |actor: &str, target: &str| {
            let draft = AuditDraft::new(actor, ActorRole::Admin, "x").target(target);
            AuditEvent::seal(&ChainHead::GENESIS, &draft, Timestamp::EPOCH, &key())
        };
        let (e1, e2) = (mk(&a, &b), mk(&c, &d));
        prop_assert_eq!(e1.canonical_bytes() == e2.canonical_bytes(), a == c && b == d);
    }

    #[test]
    fn exports_are_one_line_whatever_the_fields_hold(actor in text(), target in text(), reason in text()) {
        let draft = AuditDraft::new(actor, ActorRole::Vendor, "request.create")
            .target(target)
            .details(serde_json::json!({ "reason": reason }));
        let ev = AuditEvent::seal(&ChainHead::GENESIS, &draft, Timestamp::EPOCH, &key());
        let rec = ExportRecord::from(&ev);
        let line = rec.jsonl_line();
        let raw_break = line.contains(LINE_BREAKS);
        prop_assert!(!raw_break, "a raw line break in {}", line);
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        prop_assert_eq!(back["actor"].as_str().unwrap(), ev.actor.as_str());
        for cell in rec.csv_row() {
            let bad = cell.chars().any(|c| c.is_control() || LINE_BREAKS.contains(&c));
            prop_assert!(!bad, "a control or line-break character in {}", cell);
        }
    }
}
