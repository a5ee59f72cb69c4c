//! The SMTP proxy: an smtp listener's connection is an SMTP session in which gatehouse is the
//! server to the client and a client to the origin MTA, as Zorp's SmtpProxy and nginx's mail
//! module are. Every command is parsed and checked (`gatehouse_wire::smtp`) before anything of
//! it reaches the origin; the origin's EHLO extensions are filtered; the message after DATA is
//! re-framed by the strict reader, so no end-of-data trick (SMTP smuggling) passes; the origin
//! learns the client's address by XCLIENT, a PROXY header or a transparent source address.
//!
//! ```text
//! accept -> [PROXY expect] -> [greeting_delay: 554 to a client that talks first]
//!   -> route (listener, client zone, destination) -> origin: connect, [PROXY], [TLS], 220,
//!      [EHLO + STARTTLS] -> our 220
//!   -> session (session.rs): each command line -> parse -> sequence and policy -> origin
//!      -> reply; DATA (data.rs) streams the checked message to the origin
//!   -> one access-log line per transaction (record.rs)
//! ```

mod client;
mod data;
mod origin;
mod record;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_config::model::{Listener, SmtpListener};
use gatehouse_wire::smtp::{EnhancedCode, Reply};
use tokio::net::TcpStream;

use client::Client;
use origin::{ClientId, Origin};

use crate::runtime::{Shared, Snapshot};
use crate::upstream::Upstream;

/// Serves a connection accepted by an smtp listener, to its end.
pub async fn serve(
    stream: TcpStream,
    settings: &Listener,
    tls: Option<Arc<crate::tls::ListenerTls>>,
    shared: Arc<Shared>,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let Some(cfg) = settings.smtp.as_ref() else {
        return;
    };
    let mut client = Client::new(stream);
    let metrics = &shared.metrics;
    if !cfg.greeting_delay.is_zero() && client.talks_first(cfg.greeting_delay).await {
        metrics.smtp_refusal("pregreet");
        client.reply(&Reply::with_status(
            554,
            EnhancedCode::new(5, 5, 1),
            &format!(
                "{} protocol error: talked before the greeting",
                cfg.hostname
            ),
        ));
        client.close().await;
        return;
    }
    let chosen = route(&shared.snapshot(), listener, peer, local);
    let who = ClientId { peer, local };
    let origin = match &chosen {
        Some((up, _)) => Origin::connect(up, &who, &cfg.hostname).await,
        None => Err("no route and no default upstream".into()),
    };
    let origin = match origin {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(listener, %peer, error = %e, "smtp: no origin");
            metrics.smtp_refusal("no_origin");
            client.reply(&unavailable(cfg));
            client.close().await;
            return;
        }
    };
    let Some((up, route_name)) = chosen else {
        return;
    };
    client.reply(&Reply::new(220, format!("{} ESMTP", cfg.hostname)));
    let ctx = session::Ctx {
        cfg,
        tls: tls.map(|t| t.config.clone()),
        listener,
        route: route_name,
        up,
        who,
        shared: shared.clone(),
    };
    session::run(&ctx, client, origin).await;
}

/// `421 4.3.0`: no origin to pass the session to.
fn unavailable(cfg: &SmtpListener) -> Reply {
    Reply::with_status(
        421,
        EnhancedCode::new(4, 3, 0),
        &format!(
            "{} Service not available, closing transmission channel",
            cfg.hostname
        ),
    )
}

/// The upstream for a session, and the name of the route that chose it ("" for the listener's
/// default upstream): the L4 listeners' choice, by the client's zone (sources) and the address
/// it reached (destinations).
fn route(
    snap: &Snapshot,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(Arc<Upstream>, Arc<str>)> {
    let (up, route) = crate::l4::choose_route(snap, listener, peer, local, None)?;
    let name = route.map_or_else(|| Arc::from(""), |i| snap.route_names[i].clone());
    Some((up, name))
}
