//! The Modbus/TCP decoder on arbitrary bytes: it must never panic; whatever it accepts re-encodes
//! to exactly the bytes it came from; the streaming decoder, fed in uneven chunks, yields the same
//! ADUs as repeated `decode`; and reading any ADU as a request never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::modbus::{AduDecoder, Request, decode};

fuzz_target!(|data: &[u8]| {
    let mut expected = Vec::new();
    let mut at = 0;
    while let Ok(Some((adu, used))) = decode(&data[at..]) {
        assert_eq!(adu.to_vec(), data[at..at + used], "the encoding is canonical");
        let _ = Request::parse(&adu);
        expected.push(adu);
        at += used;
    }
    let mut decoder = AduDecoder::new();
    let mut got = Vec::new();
    for chunk in data.chunks(5) {
        decoder.push(chunk);
        while let Ok(Some(adu)) = decoder.next_adu() {
            got.push(adu);
        }
    }
    assert_eq!(got, expected);
});
