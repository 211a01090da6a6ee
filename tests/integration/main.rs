//! farmhand's integration tests: one test binary (one link) whose modules
//! drive the real `farmhand` binary against temporary farms, real local git
//! upstreams, real HTTP, real signals and a real `NOTIFY_SOCKET`.
//!
//! `util` holds the shared harness; each other module covers one area.
#![allow(dead_code)]

mod util;

mod check;
mod console;
mod control;
mod corpus;
mod crash;
mod daemon;
mod faults;
mod fetch_security;
mod forges;
mod helpers;
mod history;
mod http;
mod http_limits;
mod load;
mod notify;
mod once;
mod once_security;
mod once_transport;
mod ops;
mod peipkg;
mod real_systemd;
mod runtime;
mod sandbox;
mod scale;
mod smoke;
mod state_dir;
mod systemd;
mod tls;
mod webhooks;
