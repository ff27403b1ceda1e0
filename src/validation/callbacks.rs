//! Rule 9 for callbacks: `callback_url` (its shape everywhere, the address rule as the
//! gateway's config decides), `callback_events` and `webhook_events`.

use url::Url;

use super::{Checked, ValidationError};
use crate::domain::VideoRequest;

/// Rule 9, `callback_url`, as far as it holds on every gateway: an absolute http(s) URL
/// with a host. Whether plain http and internal addresses are allowed depends on
/// `webhooks.allow_private_targets`: `check_callback_url` applies that (`validate_for_gateway`).
pub(super) fn check_callback_url_shape(req: &VideoRequest) -> Checked {
    let Some(raw) = req.callback_url.as_deref() else {
        return Ok(());
    };
    // The URL is stored as sent, and the database refuses a NUL (a 500, found by
    // tests/properties.rs); `Url::parse` would quietly escape or drop a control character.
    if raw.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "callback_url",
            "callback_url must not contain control characters; percent-encode them.",
        ));
    }
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "https" | "http")
                && url.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err(callback_url_error()),
    }
}

fn callback_url_error() -> ValidationError {
    ValidationError::new(
        "callback_url",
        "callback_url must be an absolute https URL such as https://example.com/hooks.",
    )
}

/// Rule 9, `callback_url`, in full: https, and not a loopback, private, link-local,
/// multicast or metadata IP address, unless `allow_private_targets` (tests, private
/// networks), which allows plain http and any address. A host name is not resolved here:
/// its addresses are checked at each delivery (`outbound`).
pub fn check_callback_url(raw: Option<&str>, allow_private_targets: bool) -> Checked {
    let Some(raw) = raw else {
        return Ok(());
    };
    let url = Url::parse(raw).map_err(|_| callback_url_error())?;
    let scheme_ok = url.scheme() == "https" || (allow_private_targets && url.scheme() == "http");
    if !scheme_ok || url.host_str().is_none_or(str::is_empty) {
        return Err(callback_url_error());
    }
    if allow_private_targets {
        return Ok(());
    }
    let internal = match url.host() {
        Some(url::Host::Ipv4(ip)) => crate::outbound::is_internal(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::outbound::is_internal(ip.into()),
        // A name is resolved at each delivery, where every address it has is checked: it
        // may point elsewhere by then.
        Some(url::Host::Domain(_)) => false,
        None => true,
    };
    if internal {
        return Err(ValidationError::new(
            "callback_url",
            "callback_url must not point at a loopback, private, link-local, multicast or \
             metadata address.",
        ));
    }
    Ok(())
}

/// Rule 9, `callback_events`.
pub(super) fn check_callback_events(req: &VideoRequest) -> Checked {
    let Some(events) = &req.callback_events else {
        return Ok(());
    };
    if req.callback_url.is_none() {
        return Err(ValidationError::new(
            "callback_events",
            "callback_events needs a callback_url to send them to.",
        ));
    }
    if let Some(i) = (1..events.len()).find(|&i| events[..i].contains(&events[i])) {
        return Err(ValidationError::new(
            format!("callback_events[{i}]"),
            "callback_events must not name an event twice.",
        ));
    }
    Ok(())
}

/// Rule 9, `webhook_events`: with a `callback_url`, not empty, each name once.
pub(super) fn check_webhook_events(req: &VideoRequest) -> Checked {
    let Some(events) = &req.webhook_events else {
        return Ok(());
    };
    if req.callback_url.is_none() {
        return Err(ValidationError::new(
            "webhook_events",
            "webhook_events needs a callback_url to deliver them to.",
        ));
    }
    if events.is_empty() {
        return Err(ValidationError::new(
            "webhook_events",
            "webhook_events must name at least one of in_progress, completed, failed, \
             cancelled (leave it out to have all delivered).",
        ));
    }
    if let Some(i) = (1..events.len()).find(|&i| events[..i].contains(&events[i])) {
        return Err(ValidationError::new(
            format!("webhook_events[{i}]"),
            "webhook_events must not name an event twice.",
        ));
    }
    Ok(())
}
