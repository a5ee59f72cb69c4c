//! The HTTP engine: the connection server, the request pipeline and its phases.

pub mod answer;
pub mod body;
pub mod cache_flow;
pub mod compress;
pub mod forward;
pub mod h1;
pub mod headers;
pub mod limit;
pub mod pipeline;
pub mod prepare;
pub mod record;
pub mod respond;
pub mod router;
pub mod server;

pub use body::ProxyBody;
