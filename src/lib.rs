//! omnigate: one normalized API in front of the Kling Omni-Video resellers.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod providers;
pub mod validation;
