//! End-to-end tests live in `tests/*.rs`; they drive the real `portcullis` binary.
