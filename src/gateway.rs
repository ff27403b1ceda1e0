//! The shared state of one gateway process: what every request handler and worker
//! needs. It sits below `api/`, `workers/` and `submit.rs`; `app.rs` builds it and
//! wires them together.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::routing::Router;
use crate::store::Store;

/// Everything a request handler or worker needs, shared behind an `Arc`.
pub struct Gateway {
    pub store: Store,
    pub router: Router,
    /// Provider circuits and outcome statistics, shared with other processes through the store.
    pub health: crate::health::Health,
    pub config: Config,
    /// Names this process in leases, so a lease shows who holds a task.
    pub instance_id: String,
    /// Submits in flight (each runs on its own task); a graceful shutdown waits on them.
    pub submits: TaskTracker,
    /// Cancelled when a graceful shutdown begins: creates are refused from then on.
    pub draining: CancellationToken,
    /// Each background worker's last completed step, for `/healthz`.
    pub heartbeats: std::sync::Arc<crate::supervise::Heartbeats>,
    /// Per-key request rates, in this process or shared through Redis.
    pub limits: crate::limits::Limits,
    /// Omnigate's own copies of finished videos (`[results]`), when enabled.
    pub results: Option<crate::results::Results>,
    /// Provider caps and the admission queue (`queue/`).
    pub queue: crate::queue::Queue,
    /// Watched tasks, cached finished reads and open streams (`live/`).
    pub live: crate::live::Live,
    /// Completion times and outcomes per provider, as last read from the store (`timing/`).
    pub timings: crate::timing::Timings,
}
