//! The relay's frame decoder on arbitrary bytes: it must never panic, and whatever it accepts must
//! re-encode to exactly the bytes it came from and decode to the same frame again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::wire::{FrameDecoder, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = decode(data) {
        assert!(used <= data.len());
        let again = frame.to_vec().expect("a decoded frame re-encodes");
        assert_eq!(again, data[..used], "the encoding is canonical");
        assert_eq!(decode(&again), Ok(Some((frame, again.len()))));
    }

    // The buffering decoder, fed in uneven chunks, must see the same frames as repeated `decode`.
    let mut expected = Vec::new();
    let mut at = 0;
    while let Ok(Some((frame, used))) = decode(&data[at..]) {
        expected.push(frame);
        at += used;
    }
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    for chunk in data.chunks(7) {
        decoder.push(chunk);
        while let Ok(Some(frame)) = decoder.next_frame() {
            got.push(frame);
        }
    }
    assert_eq!(got, expected);
});
