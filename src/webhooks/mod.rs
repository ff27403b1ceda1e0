//! Client webhooks: Standard Webhooks signatures, the HTTP client that will only reach
//! addresses it has checked, and what one delivery attempt sends and concludes. The worker
//! that claims due events is `workers::webhooks`; the outbox rows are `store::webhooks`.

pub mod client;
pub mod delivery;
pub mod signing;

pub use client::{Answer, SendError, WebhookClient};
pub use delivery::{attempt, payload, payload_in, Outcome};
