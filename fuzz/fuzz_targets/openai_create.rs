//! `POST /v1/videos`: any body, as JSON or (first byte odd) as a multipart form, parsed,
//! mapped and checked as a create does.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/entry_points.rs"]
mod entry_points;

/// The boundary the seeds in `fuzz/seeds/openai_create` use.
const FORM: &str = "multipart/form-data; boundary=omnigate-fuzz";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = if kind % 2 == 1 {
        FORM
    } else {
        "application/json"
    };
    entry_points::openai_create(content_type, body);
});
