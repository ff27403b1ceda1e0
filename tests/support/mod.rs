//! Shared test support: the gateway harness and the provider simulators.
#![allow(dead_code)]

pub mod app;
pub mod console;
pub mod drill;
pub mod entry_points;
pub mod faults;
pub mod fixtures;
pub mod proxy;
pub mod python;
pub mod raw;
pub mod receiver;
pub mod sim;
