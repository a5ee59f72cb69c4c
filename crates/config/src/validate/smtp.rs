//! The SMTP proxy's keys: `[listeners.NAME.smtp]` (greeting name, STARTTLS policy, limits,
//! relay control, extra verbs, timeouts), an smtp upstream's `client_address`, and the rule
//! that smtp listeners and smtp upstreams go together.

use std::time::Duration;

use super::Validator;
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

/// Verbs an smtp listener may pass on besides its default set. XCLIENT and XFORWARD are the
/// proxy's own (they would let a client claim another address); BDAT, TURN and ATRN are not
/// framed or not safe to relay; ETRN asks the origin to run its queue for a domain, which a
/// client outside has no business doing.
const EXTRA_VERBS: [&str; 2] = ["VRFY", "EXPN"];

/// `[listeners.NAME.smtp]` of an smtp listener (defaults when absent); an error on others.
pub(super) fn smtp_listener(
    v: &mut Validator,
    lp: &KeyPath,
    raw: &RawListener,
) -> Option<SmtpListener> {
    let sp = lp.key("smtp");
    if raw.protocol != RawListenerProtocol::Smtp {
        if raw.smtp.is_some() {
            v.at(
                &sp,
                "only smtp listeners take `smtp` (set protocol = \"smtp\")",
            );
        }
        return None;
    }
    let default = RawSmtp::default();
    let s = raw.smtp.as_ref().unwrap_or(&default);
    let has_certificates = raw.tls.is_some();
    let starttls = match s.starttls.as_deref() {
        None if has_certificates => StartTls::Offer,
        None | Some("off") => StartTls::Off,
        Some("offer") => StartTls::Offer,
        Some("require") => StartTls::Require,
        Some(x) => {
            v.at(
                &sp.key("starttls"),
                format!("`{x}` is not one of offer, require, off"),
            );
            StartTls::Off
        }
    };
    if starttls != StartTls::Off && !has_certificates {
        v.at(
            &sp.key("starttls"),
            "needs certificates: set `tls.certificates` on the listener",
        );
    }
    let hostname = match &s.hostname {
        Some(h) if valid_hostname(h) => h.clone(),
        Some(h) => {
            v.at(&sp.key("hostname"), format!("`{h}` is not a host name"));
            h.clone()
        }
        None => machine_name(),
    };
    let max_message_size = v
        .size(&sp.key("max_message_size"), s.max_message_size.as_deref())
        .unwrap_or(25 << 20);
    if max_message_size < 1024 {
        v.at(&sp.key("max_message_size"), "must be at least 1KiB");
    }
    if s.max_recipients == Some(0) {
        v.at(&sp.key("max_recipients"), "must be at least 1");
    }
    Some(SmtpListener {
        hostname,
        starttls,
        max_message_size,
        max_recipients: s.max_recipients.unwrap_or(100).max(1),
        recipient_domains: domains(v, &sp, &s.recipient_domains),
        commands: commands(v, &sp, &s.commands),
        greeting_delay: v.duration(
            &sp.key("greeting_delay"),
            s.greeting_delay.as_deref(),
            Duration::ZERO,
        ),
        command_timeout: v.duration(
            &sp.key("command_timeout"),
            s.command_timeout.as_deref(),
            Duration::from_secs(300),
        ),
        data_timeout: v.duration(
            &sp.key("data_timeout"),
            s.data_timeout.as_deref(),
            Duration::from_secs(180),
        ),
    })
}

/// `recipient_domains`, lowercase.
fn domains(v: &mut Validator, sp: &KeyPath, raw: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        if valid_hostname(d) {
            out.push(d.to_ascii_lowercase());
        } else {
            v.at(
                &sp.key("recipient_domains").index(i),
                format!("`{d}` is not a domain"),
            );
        }
    }
    out
}

/// `commands`, uppercase; only the verbs that may be passed.
fn commands(v: &mut Validator, sp: &KeyPath, raw: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let verb = c.to_ascii_uppercase();
        if EXTRA_VERBS.contains(&verb.as_str()) {
            out.push(verb);
        } else {
            v.at(
                &sp.key("commands").index(i),
                format!(
                    "`{c}` cannot be passed: the extra verbs are {} (XCLIENT and XFORWARD are the proxy's own)",
                    EXTRA_VERBS.join(", ")
                ),
            );
        }
    }
    out
}

/// A DNS name: labels of letters, digits and hyphens (and `_`), dot-separated.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The machine's host name, as the greeting's default.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| valid_hostname(s))
        .unwrap_or_else(|| "localhost".to_string())
}

/// An upstream's `client_address`: only on smtp upstreams.
pub(super) fn client_address(v: &mut Validator, up: &KeyPath, raw: &RawUpstream) -> ClientAddress {
    let ca = match raw.client_address.as_deref() {
        None | Some("none") => ClientAddress::None,
        Some("xclient") => ClientAddress::Xclient,
        Some(x) => {
            v.at(
                &up.key("client_address"),
                format!("`{x}` is not one of xclient, none"),
            );
            ClientAddress::None
        }
    };
    if raw.client_address.is_some() && raw.protocol != RawUpstreamProtocol::Smtp {
        v.at(
            &up.key("client_address"),
            "only smtp upstreams take `client_address` (set protocol = \"smtp\")",
        );
    }
    if raw.tls.as_ref().is_some_and(|t| t.starttls) && raw.protocol != RawUpstreamProtocol::Smtp {
        v.at(
            &up.key("tls").key("starttls"),
            "only smtp upstreams use STARTTLS",
        );
    }
    ca
}

/// An smtp listener reaches smtp upstreams only, and an http listener none: `what` names the
/// key that points from one to the other.
pub(super) fn pairing(
    v: &mut Validator,
    at: &KeyPath,
    listener: RawListenerProtocol,
    upstream: Option<&RawUpstream>,
    what: &str,
) {
    let Some(up) = upstream else { return };
    let smtp_up = up.protocol == RawUpstreamProtocol::Smtp;
    match listener {
        RawListenerProtocol::Smtp if !smtp_up => v.at(
            at,
            format!("{what} serves an smtp listener: its upstream needs protocol = \"smtp\""),
        ),
        RawListenerProtocol::Http | RawListenerProtocol::Https if smtp_up => v.at(
            at,
            format!("{what} serves an http listener: an smtp upstream cannot answer HTTP"),
        ),
        _ => {}
    }
}
