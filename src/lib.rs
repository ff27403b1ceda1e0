//! omnigate: one normalized API in front of the Kling Omni-Video resellers.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod domain;
pub mod gateway;
pub mod health;
pub mod keys_cli;
pub mod limits;
pub mod live;
pub mod outbound;
pub mod providers;
pub mod queue;
pub mod results;
pub mod routing;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod store;
pub mod submit;
pub mod supervise;
pub mod task_view;
pub mod telemetry;
pub mod timing;
pub mod validation;
pub mod webhooks;
pub mod workers;
