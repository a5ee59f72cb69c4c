//! End-to-end tests: real sockets on ephemeral ports, in-process origins, and real peers.

#![allow(clippy::unwrap_used)]

mod acme;
mod balance;
mod cache;
mod cli;
mod common;
mod compress;
mod config;
mod conn_limits;
mod forwarding;
mod h2_guards;
mod health;
mod l4;
mod lifecycle;
mod limits;
mod misc;
mod nginx;
mod peer;
mod postfix;
mod protocols;
mod proxy_protocol;
mod rate_limits;
mod routing;
mod server_h1;
mod smtp;
mod smtp_fake;
mod smtp_postfix;
mod tls;
mod transparent;
mod upstream_h1;
