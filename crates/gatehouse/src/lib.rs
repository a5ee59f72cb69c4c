//! gatehouse: a reverse proxy, load balancer and application gateway.
//!
//! `runtime` starts and reloads; `http` serves clients through `http::pipeline`; `upstream`
//! balances, checks and pools servers; `admin` exposes metrics and status.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod demo;
pub mod error;
pub mod http;
pub mod l4;
mod lazy_timer;
pub mod listener_proxy;
pub mod metrics;
pub mod runtime;
pub mod smtp;
pub mod splice;
pub mod tls;
pub mod udp;
pub mod upstream;

pub use runtime::Gatehouse;
