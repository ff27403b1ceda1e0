//! `POST /v1/video/generations`: any body, parsed and checked as a create does.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/entry_points.rs"]
mod entry_points;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    entry_points::native_create(body);
});
