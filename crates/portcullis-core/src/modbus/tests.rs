use proptest::prelude::*;

use super::*;
use crate::access::{Access, WriteScope};

fn hex(spaced: &str) -> Vec<u8> {
    hex::decode(spaced.replace(' ', "")).unwrap()
}

#[test]
fn reads_a_read_holding_registers_request() {
    // Transaction 1, unit 1, FC 3, address 0x006B, 3 registers (the spec's example).
    let bytes = hex("0001 0000 0006 01 03 006b 0003");
    let (adu, used) = decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!((adu.transaction, adu.unit, adu.function()), (1, 1, 3));
    assert_eq!(adu.to_vec(), bytes);
    let r = Request::parse(&adu).unwrap();
    assert_eq!((r.address, r.quantity), (Some(0x6b), Some(3)));
}

#[test]
fn reads_writes_with_their_address_and_quantity() {
    let single = decode(&hex("0002 0000 0006 11 06 0001 0003"))
        .unwrap()
        .unwrap()
        .0;
    let r = Request::parse(&single).unwrap();
    assert_eq!(
        (r.unit, r.function, r.address, r.quantity),
        (0x11, 6, Some(1), Some(1))
    );
    // FC 16: 2 registers at 1, 4 bytes of values.
    let multi = decode(&hex("0003 0000 000b 01 10 0001 0002 04 000a 0102"))
        .unwrap()
        .unwrap()
        .0;
    let r = Request::parse(&multi).unwrap();
    assert_eq!((r.address, r.quantity), (Some(1), Some(2)));
    // FC 15: 10 coils at 0x13 take 2 bytes.
    let coils = decode(&hex("0004 0000 0009 01 0f 0013 000a 02 cd01"))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(Request::parse(&coils).unwrap().quantity, Some(10));
    // FC 23 names its write part.
    let rw = decode(&hex(
        "0005 0000 0011 01 17 0003 0006 000e 0003 06 00ff 00ff 00ff",
    ))
    .unwrap()
    .unwrap()
    .0;
    let r = Request::parse(&rw).unwrap();
    assert_eq!((r.address, r.quantity), (Some(0x0e), Some(3)));
}

#[test]
fn names_diagnostics_sub_functions_and_mei_types() {
    let echo = decode(&hex("0001 0000 0006 01 08 0000 a537"))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(Request::parse(&echo).unwrap().sub_function, Some(0));
    let listen_only = decode(&hex("0001 0000 0006 01 08 0004 0000"))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(Request::parse(&listen_only).unwrap().sub_function, Some(4));
    let ident = decode(&hex("0001 0000 0005 01 2b 0e 01 00"))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(Request::parse(&ident).unwrap().mei_type, Some(14));
}

#[test]
fn malformed_frames_are_errors() {
    assert_eq!(
        decode(&hex("0001 0001 0006 01 03 0000 0001")),
        Err(ModbusError::ProtocolId(1))
    );
    // The protocol id is refused from its own bytes, before the rest has arrived.
    assert_eq!(decode(&hex("0001 0002")), Err(ModbusError::ProtocolId(2)));
    for length in [0u16, 1, 255, 0xffff] {
        let mut bytes = hex("0001 0000");
        bytes.extend_from_slice(&length.to_be_bytes());
        assert_eq!(decode(&bytes), Err(ModbusError::Length(length)), "{length}");
    }
    // The longest ADU is 260 bytes; one byte more is refused.
    let mut longest = hex("0001 0000 00fe 01");
    longest.extend(std::iter::repeat_n(0x41, 253));
    assert_eq!(decode(&longest).unwrap().unwrap().1, MAX_ADU_LEN);
    // Shapes that do not match the function code.
    for bad in [
        "0001 0000 0005 01 03 0000 00",           // a short read
        "0001 0000 0009 01 10 0001 0002 04 000a", // FC 16: 4 value bytes promised, 2 sent
        "0001 0000 0008 01 10 0001 0002 03 00",   // FC 16: byte count 3 for 2 registers
        "0001 0000 0003 01 07 00",                // FC 7 carries no data
        "0001 0000 0002 01 08",                   // FC 8 without a sub-function
        "0001 0000 0002 01 2b",                   // FC 43 without an MEI type
    ] {
        let adu = decode(&hex(bad)).unwrap().unwrap().0;
        assert!(
            matches!(Request::parse(&adu), Err(ModbusError::Malformed { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_broken_stream_stays_broken() {
    let mut d = AduDecoder::new();
    d.push(&hex("0001 0007 0006 01 03 0000 0001"));
    assert_eq!(d.next_adu(), Err(ModbusError::ProtocolId(7)));
    d.push(&hex("0001 0000 0006 01 03 0000 0001"));
    assert_eq!(d.next_adu(), Err(ModbusError::ProtocolId(7)));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn the_exception_response_keeps_transaction_and_unit() {
    let write = decode(&hex("beef 0000 0006 11 06 0001 0003"))
        .unwrap()
        .unwrap()
        .0;
    let ex = exception_response(&write, 1);
    assert_eq!(ex.to_vec(), hex("beef 0000 0003 11 86 01"));
}

#[test]
fn every_function_code_parses_or_is_malformed_never_panics() {
    for function in 0..=255u8 {
        for data_len in 0..12 {
            let adu = Adu {
                transaction: 1,
                unit: 1,
                pdu: std::iter::once(function).chain(0..data_len).collect(),
            };
            match Request::parse(&adu) {
                Ok(r) => assert_eq!(r.function, function),
                Err(ModbusError::Malformed { function: f, .. }) => assert_eq!(f, function),
                Err(e) => panic!("{function}: {e}"),
            }
        }
    }
}

#[test]
fn read_access_lets_exactly_the_reading_functions_through() {
    let request = |function: u8, sub_function, mei_type| Request {
        unit: 1,
        function,
        address: None,
        quantity: None,
        sub_function,
        mei_type,
    };
    let mut passed = Vec::new();
    for function in 0..=255u8 {
        if request(function, None, None).only_reads() {
            passed.push(function);
        }
    }
    assert_eq!(passed, [1, 2, 3, 4, 7, 11, 12, 17, 20, 24]);
    // Diagnostics: only echo; "force listen only" (4), "clear counters" (10), restart (1) not.
    assert!(request(8, Some(0), None).only_reads());
    for sub in [1, 4, 10, 0xffff] {
        assert!(!request(8, Some(sub), None).only_reads(), "FC 8/{sub}");
    }
    // Encapsulated transport: only read device identification.
    assert!(request(43, None, Some(14)).only_reads());
    assert!(!request(43, None, Some(13)).only_reads());
    for write in [5, 6, 15, 16, 21, 22, 23, 40, 42, 90, 125, 126] {
        assert!(!request(write, None, None).only_reads(), "FC {write}");
    }
    // Parsed from the wire, too.
    let listen_only = decode(&hex("0001 0000 0006 01 08 0004 0000"))
        .unwrap()
        .unwrap()
        .0;
    assert!(!Request::parse(&listen_only).unwrap().only_reads());
    let read = decode(&hex("0001 0000 0006 01 03 006b 0003"))
        .unwrap()
        .unwrap()
        .0;
    assert!(Request::parse(&read).unwrap().only_reads());
}

fn parsed(spaced: &str) -> (Adu, Request) {
    let adu = decode(&hex(spaced)).unwrap().unwrap().0;
    let r = Request::parse(&adu).unwrap();
    (adu, r)
}

#[test]
fn writes_carry_their_values_for_the_record() {
    let (adu, r) = parsed("0002 0000 0006 01 06 0003 1092");
    assert_eq!(r.write_values(&adu), [4242]);
    let (adu, r) = parsed("0002 0000 0006 01 05 00ac ff00");
    assert_eq!(r.write_values(&adu), [1]);
    let (adu, r) = parsed("0003 0000 000b 01 10 0001 0002 04 000a 0102");
    assert_eq!(r.write_values(&adu), [10, 258]);
    // 10 coils from 0xcd 0x01: 1011 0011, then 1 and 0.
    let (adu, r) = parsed("0004 0000 0009 01 0f 0013 000a 02 cd01");
    assert_eq!(r.write_values(&adu), [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]);
    let (adu, r) = parsed("0005 0000 0011 01 17 0003 0006 000e 0003 06 00ff 00fe 00fd");
    assert_eq!(r.write_values(&adu), [255, 254, 253]);
    let (adu, r) = parsed("0006 0000 0008 01 16 0004 00f2 0025");
    assert_eq!(r.write_values(&adu), [0xf2, 0x25]);
    let (adu, r) = parsed("0001 0000 0006 01 03 006b 0003");
    assert!(r.write_values(&adu).is_empty(), "a read carries no values");
}

#[test]
fn rules_judge_every_function_code_by_access_and_scope() {
    let request = |function: u8, unit, address, quantity| Request {
        unit,
        function,
        address,
        quantity,
        sub_function: Some(4),
        mei_type: Some(13),
    };
    let read = Rules::read_only();
    let write = Rules {
        access: Access::Write,
        scope: WriteScope::default(),
    };
    for function in 0..=255u8 {
        let r = request(function, 1, Some(100), Some(1));
        let expected_read = if r.only_reads() {
            Judgement::Read
        } else {
            Judgement::Refused(Refusal::ReadOnly)
        };
        assert_eq!(read.judge(&r), expected_read, "FC {function}");
        let expected_write = if r.only_reads() {
            Judgement::Read
        } else {
            Judgement::Write
        };
        assert_eq!(write.judge(&r), expected_write, "FC {function}");
    }
    assert_eq!(Refusal::ReadOnly.exception_code(), ILLEGAL_FUNCTION);

    // "Writes only to holding registers 100-199 of unit 1."
    let scoped = Rules {
        access: Access::Write,
        scope: WriteScope {
            units: [1].into(),
            registers: vec![100..=199],
        },
    };
    let judge = |f, unit, a, q| scoped.judge(&request(f, unit, Some(a), Some(q)));
    assert_eq!(judge(6, 1, 100, 1), Judgement::Write);
    assert_eq!(judge(16, 1, 190, 10), Judgement::Write);
    assert_eq!(judge(3, 2, 0, 10), Judgement::Read, "reads are not bounded");
    assert_eq!(
        judge(6, 2, 100, 1),
        Judgement::Refused(Refusal::UnitOutsideScope)
    );
    assert_eq!(
        judge(16, 1, 195, 10),
        Judgement::Refused(Refusal::OutsideScope)
    );
    assert_eq!(
        judge(5, 1, 100, 1),
        Judgement::Refused(Refusal::OutsideScope),
        "coils"
    );
    assert_eq!(
        scoped.judge(&request(90, 1, None, None)),
        Judgement::Refused(Refusal::OutsideScope),
        "a vendor code names no register"
    );
}

fn adu() -> impl Strategy<Value = Adu> {
    (
        any::<u16>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 1..=253),
    )
        .prop_map(|(transaction, unit, pdu)| Adu {
            transaction,
            unit,
            pdu,
        })
}

proptest! {
    #[test]
    fn adus_round_trip(adu in adu()) {
        let bytes = adu.to_vec();
        prop_assert!(bytes.len() <= MAX_ADU_LEN);
        prop_assert_eq!(decode(&bytes), Ok(Some((adu, bytes.len()))));
    }

    #[test]
    fn any_split_gives_the_same_adus(
        adus in proptest::collection::vec(adu(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let bytes: Vec<u8> = adus.iter().flat_map(Adu::to_vec).collect();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut d = AduDecoder::new();
        let mut got = Vec::new();
        for w in at.windows(2) {
            d.push(&bytes[w[0]..w[1]]);
            while let Some(adu) = d.next_adu().unwrap() {
                got.push(adu);
            }
        }
        prop_assert_eq!(got, adus);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut d = AduDecoder::new();
        d.push(&bytes);
        while let Ok(Some(adu)) = d.next_adu() {
            let _ = Request::parse(&adu);
        }
    }
}
