//! `POST /upstream/callbacks/{token}`: any body about a task in any state, judged as the
//! intake judges it with each dialect's adapter. First byte: the task's state and whether
//! omnigate knows its provider id; then the token up to the first newline; the rest is
//! the body.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/entry_points.rs"]
mod entry_points;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let state = entry_points::TASK_STATES[usize::from(head) % entry_points::TASK_STATES.len()];
    let ours = (head & 0x80 != 0).then_some("task-1");
    let (token, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    let token = String::from_utf8_lossy(token);
    entry_points::upstream_callback(&token, body, state, ours);
});
