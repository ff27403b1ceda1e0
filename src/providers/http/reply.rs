//! An upstream answer as we hold it: read up to a bound, its provider text made storable
//! and cut, and the way an answer held in memory (a callback, a fuzz input) is read
//! exactly as one off the network.

use serde_json::Value;

use crate::providers::ProviderError;

/// The most of an answer we read: task answers are a few KiB, so anything near this is
/// not an answer of the dialect, and an unbounded read would let a provider (or a proxy
/// in front of it) exhaust our memory.
pub(in crate::providers) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Provider words kept in an error (`error.provider_message`, logs); longer is cut.
pub(in crate::providers) const MAX_MESSAGE_CHARS: usize = 500;
/// The part of an unreadable answer kept in `ProviderError::raw_body`.
pub(in crate::providers) const MAX_RAW_BODY_BYTES: usize = 2048;

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub(in crate::providers) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body went past [`MAX_BODY_BYTES`]; `body` holds only its start.
    pub oversized: bool,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer's JSON with every string in it made storable (see [`storable`]). Every
    /// dialect reads its answers (and the callbacks it POSTs) through here, so no field a
    /// task write keeps (an id, a video URL, a message) can be missed.
    pub fn json(&self) -> Option<Value> {
        let mut body = serde_json::from_slice(&self.body).ok()?;
        make_storable(&mut body);
        Some(body)
    }

    /// The body as text for `ProviderError::raw_body`, cut to [`MAX_RAW_BODY_BYTES`].
    pub fn raw_text(&self) -> String {
        let text = storable(&String::from_utf8_lossy(&self.body));
        truncate_chars_to_bytes(&text, MAX_RAW_BODY_BYTES)
    }
}

/// Provider text as the store can keep it: a NUL becomes U+FFFD. PostgreSQL refuses a
/// NUL in text, so a task step recording one could never complete: the poller would ask
/// again for ever while the task held its key's slot (issue 19.6, tests/properties.rs).
pub(in crate::providers) fn storable(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn make_storable(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = storable(s),
        Value::Array(items) => items.iter_mut().for_each(make_storable),
        Value::Object(fields) => fields.values_mut().for_each(make_storable),
        _ => {}
    }
}

/// `s` cut to at most `max_bytes` bytes on a char boundary.
pub(in crate::providers) fn truncate_chars_to_bytes(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Provider text cut to [`MAX_MESSAGE_CHARS`] characters, marked when cut.
pub(in crate::providers) fn truncate_message(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// A body a provider POSTed to us, as if it were the answer to a query, so that a
/// callback is read by the same code as a poll.
pub(in crate::providers) fn callback_reply(body: &[u8]) -> Reply {
    answer(200, body)
}

/// An answer held whole, as [`send`] would leave it: cut at [`MAX_BODY_BYTES`] and marked
/// oversized beyond.
fn answer(status: u16, body: &[u8]) -> Reply {
    let oversized = body.len() > MAX_BODY_BYTES;
    Reply {
        status,
        body: body[..body.len().min(MAX_BODY_BYTES)].to_vec(),
        oversized,
    }
}

/// Reads an answer held in memory as [`Upstream::call`] reads one off the network (there
/// is no credential to scrub): what each adapter's `parse_*_answer`, the fuzz targets'
/// and property tests' way in, goes through, so that they see what a call sees.
pub(in crate::providers) fn read_answer<T>(
    status: u16,
    body: &[u8],
    read: impl FnOnce(&Reply) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    read(&answer(status, body)).map_err(cut_message)
}

/// The provider's words in an error cut to [`MAX_MESSAGE_CHARS`], as every call leaves them.
pub(super) fn cut_message(mut e: ProviderError) -> ProviderError {
    e.message = truncate_message(&e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::fields::videos;
    use crate::providers::http::test_reply as reply;

    #[test]
    fn every_string_of_an_answer_is_storable_video_urls_too() {
        let answer = reply(
            200,
            r#"{"data": {"task_id": "t\u0000", "videos": [{"url": "https://cdn/a\u0000.mp4"}]}}"#,
        );
        let body = answer.json().unwrap();
        assert_eq!(body["data"]["task_id"], "t\u{FFFD}");
        let urls = videos(body.pointer("/data/videos"));
        assert_eq!(urls[0].url, "https://cdn/a\u{FFFD}.mp4");
        assert!(!reply(200, "a\0b").raw_text().contains('\0'));
    }

    #[test]
    fn raw_text_is_cut_on_a_char_boundary() {
        assert_eq!(truncate_chars_to_bytes("aé", 2), "a");
        assert_eq!(truncate_chars_to_bytes("aé", 3), "aé");
    }
}
