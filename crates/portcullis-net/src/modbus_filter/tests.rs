use std::sync::Mutex;

use portcullis_core::modbus::{Adu, Refusal};
use portcullis_core::{Access, WriteScope};

use super::*;

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(u8, Judgement, Vec<u16>)>>,
    answers: Mutex<Vec<(u16, WriteAnswer)>>,
}

impl ModbusObserver for Seen {
    fn request(&self, r: &Request, j: Judgement, values: &[u16]) {
        lock(&self.requests).push((r.function, j, values.to_vec()));
    }
    fn write_answered(&self, w: &PendingWrite, a: WriteAnswer) {
        lock(&self.answers).push((w.transaction, a));
    }
}

fn adu(transaction: u16, pdu: &[u8]) -> Vec<u8> {
    Adu {
        transaction,
        unit: 1,
        pdu: pdu.to_vec(),
    }
    .to_vec()
}

fn read(t: u16) -> Vec<u8> {
    adu(t, &[3, 0, 0, 0, 10])
}
fn write(t: u16, value: u16) -> Vec<u8> {
    let [hi, lo] = value.to_be_bytes();
    adu(t, &[6, 0, 3, hi, lo])
}

fn filter(access: Access) -> (ModbusFilter, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let rules = Rules {
        access,
        scope: WriteScope::default(),
    };
    (ModbusFilter::new(rules, seen.clone()), seen)
}

fn split(v: Verdict) -> (Vec<u8>, Vec<u8>) {
    match v {
        Verdict::Split { forward, answer } => (forward.to_vec(), answer.to_vec()),
        other => panic!("expected a split, got {other:?}"),
    }
}

#[test]
fn whole_reads_pass_as_they_are() {
    let (f, seen) = filter(Access::Read);
    let mut i = f.requests();
    let two = [read(1), read(2)].concat();
    assert!(matches!(i.inspect(&Bytes::from(two)), Verdict::Pass));
    assert_eq!(lock(&seen.requests).len(), 2);
}

#[test]
fn a_refused_write_is_answered_with_exception_01_and_never_forwarded() {
    let (f, seen) = filter(Access::Read);
    let mut i = f.requests();
    let chunk = [read(1), write(2, 4242), read(3)].concat();
    let (forward, answer) = split(i.inspect(&Bytes::from(chunk)));
    assert_eq!(
        forward,
        [read(1), read(3)].concat(),
        "the reads go on, in order"
    );
    assert_eq!(
        answer,
        adu(2, &[0x86, 0x01]),
        "same transaction and unit, FC | 0x80, code 01"
    );
    let judged: Vec<Judgement> = lock(&seen.requests).iter().map(|r| r.1).collect();
    assert_eq!(
        judged,
        [
            Judgement::Read,
            Judgement::Refused(Refusal::ReadOnly),
            Judgement::Read
        ]
    );
}

#[test]
fn any_split_of_the_bytes_forwards_the_same_requests() {
    let stream = [read(1), write(2, 7), read(3), adu(4, &[0x5a, 1, 2])].concat();
    for cut in 1..stream.len() {
        let (f, _) = filter(Access::Read);
        let mut i = f.requests();
        let (mut forward, mut answer) = (Vec::new(), Vec::new());
        for part in [&stream[..cut], &stream[cut..]] {
            match i.inspect(&Bytes::copy_from_slice(part)) {
                Verdict::Pass => forward.extend_from_slice(part),
                Verdict::Split {
                    forward: f,
                    answer: a,
                } => {
                    forward.extend_from_slice(&f);
                    answer.extend_from_slice(&a);
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert_eq!(forward, [read(1), read(3)].concat(), "cut at {cut}");
        assert_eq!(
            answer,
            [adu(2, &[0x86, 1]), adu(4, &[0xda, 1])].concat(),
            "cut at {cut}"
        );
    }
}

#[test]
fn bytes_that_are_not_modbus_drop_the_connection() {
    let (f, _) = filter(Access::Write);
    let mut i = f.requests();
    let mut bad = read(1);
    bad[2] = 1; // protocol id 1
    let Verdict::Drop(reason) = i.inspect(&Bytes::from(bad)) else {
        panic!("a bad protocol id passed");
    };
    assert!(reason.starts_with(PROTOCOL_VIOLATION), "{reason}");
    // A read with the wrong data length is malformed too.
    let (f, _) = filter(Access::Read);
    let mut i = f.requests();
    assert!(matches!(
        i.inspect(&Bytes::from(adu(1, &[3, 0, 0, 0]))),
        Verdict::Drop(_)
    ));
}

#[test]
fn writes_are_paired_with_the_devices_answer() {
    let (f, seen) = filter(Access::Write);
    let (mut requests, mut responses) = (f.requests(), f.responses());
    let chunk = [write(7, 4242), write(8, 1), write(9, 2)].concat();
    assert!(matches!(
        requests.inspect(&Bytes::from(chunk)),
        Verdict::Pass
    ));
    assert_eq!(lock(&seen.requests)[0].2, [4242], "the value is recorded");
    // The device answers 8 with an exception, then 7 normally (split across chunks).
    let answers = [adu(8, &[0x86, 0x02]), write(7, 4242)].concat();
    assert!(matches!(
        responses.inspect(&Bytes::copy_from_slice(&answers[..5])),
        Verdict::Pass
    ));
    assert!(matches!(
        responses.inspect(&Bytes::copy_from_slice(&answers[5..])),
        Verdict::Pass
    ));
    f.finish();
    assert_eq!(
        *lock(&seen.answers),
        [
            (8, WriteAnswer::Exception(2)),
            (7, WriteAnswer::Done),
            (9, WriteAnswer::None)
        ]
    );
}

#[test]
fn undecodable_answers_pass_on_unread() {
    let (f, seen) = filter(Access::Write);
    let (mut requests, mut responses) = (f.requests(), f.responses());
    let _ = requests.inspect(&Bytes::from(write(1, 5)));
    assert!(matches!(
        responses.inspect(&Bytes::from_static(b"\x00\x01\x00\x07\x00\x00garbage")),
        Verdict::Pass
    ));
    assert!(matches!(
        responses.inspect(&Bytes::from(write(1, 5))),
        Verdict::Pass
    ));
    f.finish();
    assert_eq!(*lock(&seen.answers), [(1, WriteAnswer::None)]);
}
