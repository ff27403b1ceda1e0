//! Plumbing the adapters share: the HTTP client and auth ([`client`], [`auth`]), holding
//! an answer with a bounded read ([`reply`]), classifying what went wrong ([`classify`]),
//! reading a dialect's values ([`fields`]) and the rules every dialect's task report
//! obeys ([`observed`]).

mod auth;
mod classify;
mod client;
mod fields;
mod observed;
mod reply;

pub(super) use classify::{check, classify_http_like, malformed, no_external_id_lookup, Verdict};
pub(super) use client::Upstream;
pub(super) use fields::{integer, path_segment, progress, set_callback_url, text, videos};
pub(super) use observed::{log_unreadable, read_data_created, read_data_task, submitted, Observed};
pub(super) use reply::{callback_reply, read_answer, Reply};

/// Which kind of call a reply answers: a lost or unreadable submit answer may hide a
/// task that was created, a read has no such consequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Submit,
    Read,
}

/// A reply with a text body, for the unit tests of this module's parts.
#[cfg(test)]
fn test_reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.as_bytes().to_vec(),
        oversized: false,
    }
}
