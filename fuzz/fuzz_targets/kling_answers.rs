//! Any answer (first two bytes: the HTTP status) read as a kling create, status query
//! and lookup answer, as a submit and a poll read them.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/entry_points.rs"]
mod entry_points;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = 100 + u16::from_be_bytes(*status) % 500;
    entry_points::provider_answer(entry_points::Dialect::Kling, status, body);
});
