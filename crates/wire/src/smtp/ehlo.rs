//! EHLO replies: reading the extensions an origin offers (RFC 5321 §4.1.1.1) and building the
//! proxy's own reply, which offers only what the proxy checks and the origin supports.

use super::reply::Reply;

/// The extensions of an origin's EHLO reply: keyword upper case, and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions {
    /// The domain the origin named on the first line.
    pub domain: String,
    /// `(KEYWORD, params)` in the origin's order; params may be empty.
    pub list: Vec<(String, String)>,
}

impl Extensions {
    /// Reads a 250 EHLO reply. Lines that are not `ehlo-keyword [SP params]` (such as the old
    /// `AUTH=LOGIN` form) are skipped. None for any other code.
    pub fn from_reply(reply: &Reply) -> Option<Extensions> {
        if reply.code != 250 {
            return None;
        }
        let (first, rest) = reply.lines.split_first()?;
        let domain = first.split(' ').next().unwrap_or_default().to_owned();
        let list = rest.iter().filter_map(|l| extension(l)).collect();
        Some(Extensions { domain, list })
    }

    /// Whether `keyword` (any case) is offered.
    pub fn has(&self, keyword: &str) -> bool {
        self.params(keyword).is_some()
    }

    /// The parameters of `keyword` (any case), if it is offered.
    pub fn params(&self, keyword: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|(_, p)| p.as_str())
    }

    /// The origin's SIZE limit; None if it has none or offers none (RFC 1870 §4: 0 is none).
    pub fn size(&self) -> Option<u64> {
        self.params("SIZE")?.parse().ok().filter(|&n| n > 0)
    }
}

/// ehlo-line = ehlo-keyword *( SP ehlo-param ); ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT
/// / "-") (RFC 5321 §4.1.1.1).
fn extension(line: &str) -> Option<(String, String)> {
    let (keyword, params) = line.split_once(' ').unwrap_or((line, ""));
    let ok = keyword.bytes().next()?.is_ascii_alphanumeric()
        && keyword
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| (keyword.to_ascii_uppercase(), params.trim().to_owned()))
}

/// What the proxy offers to its client, beyond what the origin does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EhloOffer {
    /// The proxy's host name, the reply's first line.
    pub hostname: String,
    /// The limit the proxy's [`DataReader`](super::DataReader) enforces, offered as SIZE;
    /// `u64::MAX` offers SIZE without a number.
    pub max_message_size: u64,
    /// Offer STARTTLS (the proxy has a certificate and the session is not under TLS yet).
    pub starttls: bool,
    /// Offer the origin's AUTH (the caller decides: typically only under TLS).
    pub auth: bool,
}

/// The proxy's EHLO reply: its host name, then only the extensions it checks and the origin
/// supports. PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and DSN pass if the origin
/// offers them; SIZE is always the proxy's own limit; AUTH passes with the origin's mechanisms
/// if `offer.auth`; STARTTLS if `offer.starttls`. Everything else is dropped: CHUNKING and
/// BINARYMIME (BDAT is refused), XCLIENT and XFORWARD (they would let a client claim another
/// address), ETRN, ATRN, TURN and any unknown keyword.
pub fn ehlo_reply(offer: &EhloOffer, origin: &Extensions) -> Reply {
    let mut lines = vec![offer.hostname.clone()];
    let pass = |kw: &str, lines: &mut Vec<String>| {
        if origin.has(kw) {
            lines.push(kw.to_owned());
        }
    };
    pass("PIPELINING", &mut lines);
    lines.push(match offer.max_message_size {
        u64::MAX => "SIZE".to_owned(),
        n => format!("SIZE {n}"),
    });
    pass("8BITMIME", &mut lines);
    pass("ENHANCEDSTATUSCODES", &mut lines);
    pass("SMTPUTF8", &mut lines);
    pass("DSN", &mut lines);
    if offer.auth {
        match origin.params("AUTH") {
            Some(mechs) if !mechs.is_empty() => lines.push(format!("AUTH {mechs}")),
            _ => {}
        }
    }
    if offer.starttls {
        lines.push("STARTTLS".to_owned());
    }
    Reply { code: 250, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postfix() -> Reply {
        let lines = [
            "mx.origin.example",
            "PIPELINING",
            "SIZE 10240000",
            "VRFY",
            "ETRN",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "AUTH=PLAIN LOGIN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
            "XCLIENT NAME ADDR PROTO HELO",
            "XFORWARD NAME ADDR",
        ];
        Reply {
            code: 250,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn reads_a_postfix_ehlo_reply() {
        let ext = Extensions::from_reply(&postfix()).expect("250");
        assert_eq!(ext.domain, "mx.origin.example");
        assert_eq!(ext.size(), Some(10_240_000));
        assert_eq!(ext.params("auth"), Some("PLAIN LOGIN"));
        assert!(ext.has("xclient") && ext.has("CHUNKING"));
        assert!(!ext.list.iter().any(|(k, _)| k.contains('=')));
        assert_eq!(Extensions::from_reply(&Reply::new(502, "no")), None);
    }

    #[test]
    fn the_proxy_offers_only_what_it_checks() {
        let ext = Extensions::from_reply(&postfix()).expect("250");
        let offer = EhloOffer {
            hostname: "gw.example".into(),
            max_message_size: 5_000_000,
            starttls: true,
            auth: false,
        };
        let reply = ehlo_reply(&offer, &ext);
        assert_eq!(
            String::from_utf8_lossy(&reply.to_bytes()),
            "250-gw.example\r\n250-PIPELINING\r\n250-SIZE 5000000\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 STARTTLS\r\n"
        );
        let under_tls = EhloOffer {
            starttls: false,
            auth: true,
            ..offer
        };
        let reply = ehlo_reply(&under_tls, &ext);
        assert_eq!(
            reply.lines.last().map(String::as_str),
            Some("AUTH PLAIN LOGIN")
        );
        for dropped in [
            "CHUNKING", "XCLIENT", "XFORWARD", "ETRN", "VRFY", "STARTTLS",
        ] {
            assert!(
                !reply.lines.iter().any(|l| l.starts_with(dropped)),
                "{dropped}"
            );
        }
    }

    #[test]
    fn a_bare_origin_gets_a_bare_offer() {
        let ext = Extensions::from_reply(&Reply::new(250, "old.example")).expect("250");
        let offer = EhloOffer {
            hostname: "gw.example".into(),
            max_message_size: u64::MAX,
            starttls: false,
            auth: true,
        };
        assert_eq!(ehlo_reply(&offer, &ext).lines, ["gw.example", "SIZE"]);
    }
}
