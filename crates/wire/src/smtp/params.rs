//! MAIL and RCPT parameters (RFC 5321 §4.1.2 `esmtp-param`): the ones of SIZE (RFC 1870),
//! 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and AUTH (RFC 4954), checked and
//! kept; any other keyword is unknown. Keywords are case-insensitive and encoded upper case.

use std::fmt;

/// BODY= of MAIL (RFC 6152 §2, RFC 3030 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME`: only with BDAT (RFC 3030 §3), which the proxy does not offer.
    BinaryMime,
}

/// RET= of MAIL (RFC 3461 §4.3): what a bounce returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `FULL`: the whole message.
    Full,
    /// `HDRS`: the headers only.
    Hdrs,
}

/// MAIL's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// SIZE=: the size the client declares (RFC 1870 §6).
    pub size: Option<u64>,
    /// BODY=.
    pub body: Option<Body>,
    /// SMTPUTF8 (no value; RFC 6531 §3.4).
    pub smtputf8: bool,
    /// RET=.
    pub ret: Option<Ret>,
    /// ENVID=: xtext as sent (RFC 3461 §4.4).
    pub envid: Option<String>,
    /// AUTH=: xtext or `<>` as sent (RFC 4954 §5).
    pub auth: Option<String>,
}

/// NOTIFY= of RCPT (RFC 3461 §4.1): all false is `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// ORCPT= of RCPT (RFC 3461 §4.2): `addr-type;xtext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8` (RFC 6533).
    pub addr_type: String,
    /// The original address, xtext as sent.
    pub addr: String,
}

/// RCPT's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// NOTIFY=.
    pub notify: Option<Notify>,
    /// ORCPT=.
    pub orcpt: Option<Orcpt>,
}

/// Why parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ParamError {
    /// Broken syntax, a bad value or a repeated keyword: 501 5.5.4.
    Bad(&'static str),
    /// A keyword we do not know, upper case: 555 5.5.4.
    Unknown(String),
}

type Param<'a> = (String, Option<&'a str>);

/// Splits the text after a path into `keyword[=value]` pairs. It must be empty or start with a
/// space; runs of spaces between parameters are tolerated, since the line is re-encoded.
fn split(s: &str) -> Result<Vec<Param<'_>>, ParamError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if !s.starts_with(' ') {
        return Err(ParamError::Bad("space expected before parameters"));
    }
    let mut out = Vec::new();
    for token in s.split(' ').filter(|t| !t.is_empty()) {
        let (keyword, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let kw_ok = keyword
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && keyword
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-');
        // esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 admitted (RFC 6531 §3.3)
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|c| matches!(c, 33..=60 | 62..=126) || c >= 0x80)
        });
        if !kw_ok || !value_ok {
            return Err(ParamError::Bad("malformed parameter"));
        }
        let keyword = keyword.to_ascii_uppercase();
        if out.iter().any(|(k, _): &Param<'_>| *k == keyword) {
            return Err(ParamError::Bad("parameter given twice"));
        }
        out.push((keyword, value));
    }
    Ok(out)
}

fn need(value: Option<&str>) -> Result<&str, ParamError> {
    value.ok_or(ParamError::Bad("parameter needs a value"))
}

/// MAIL's parameters from the text after its path.
pub(super) fn parse_mail(s: &str) -> Result<MailParams, ParamError> {
    let mut p = MailParams::default();
    for (keyword, value) in split(s)? {
        match keyword.as_str() {
            "SIZE" => p.size = Some(size(need(value)?)?),
            "BODY" => {
                p.body = Some(match need(value)?.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(ParamError::Bad("bad BODY")),
                });
            }
            "SMTPUTF8" if value.is_none() => p.smtputf8 = true,
            "SMTPUTF8" => return Err(ParamError::Bad("SMTPUTF8 takes no value")),
            "RET" => {
                p.ret = Some(match need(value)?.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(ParamError::Bad("bad RET")),
                });
            }
            // RFC 3461 §4.4: at most 100 characters.
            "ENVID" => {
                let v = need(value)?;
                if v.len() > 100 || !is_xtext(v, false) {
                    return Err(ParamError::Bad("bad ENVID"));
                }
                p.envid = Some(v.to_owned());
            }
            "AUTH" => {
                let v = need(value)?;
                if v != "<>" && !is_xtext(v, false) {
                    return Err(ParamError::Bad("bad AUTH"));
                }
                p.auth = Some(v.to_owned());
            }
            _ => return Err(ParamError::Unknown(keyword)),
        }
    }
    Ok(p)
}

/// RCPT's parameters from the text after its path.
pub(super) fn parse_rcpt(s: &str) -> Result<RcptParams, ParamError> {
    let mut p = RcptParams::default();
    for (keyword, value) in split(s)? {
        match keyword.as_str() {
            "NOTIFY" => p.notify = Some(notify(need(value)?)?),
            "ORCPT" => p.orcpt = Some(orcpt(need(value)?)?),
            _ => return Err(ParamError::Unknown(keyword)),
        }
    }
    Ok(p)
}

/// RFC 1870 §6: size-value = 1*20DIGIT. Twenty digits can exceed a u64: such a size is kept
/// as `u64::MAX`, larger than any limit, so the answer is the 552 it deserves, not a 501.
fn size(v: &str) -> Result<u64, ParamError> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParamError::Bad("bad SIZE"));
    }
    Ok(v.bytes().fold(0u64, |n, c| {
        n.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

/// RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ).
fn notify(v: &str) -> Result<Notify, ParamError> {
    let bad = ParamError::Bad("bad NOTIFY");
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut n = Notify::default();
    for item in v.split(',') {
        let flag = match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut n.success,
            "FAILURE" => &mut n.failure,
            "DELAY" => &mut n.delay,
            _ => return Err(bad),
        };
        if std::mem::replace(flag, true) {
            return Err(bad);
        }
    }
    Ok(n)
}

/// RFC 3461 §4.2: addr-type ";" xtext, at most 500 characters; UTF-8 only for the `utf-8`
/// type of RFC 6533 §3.
fn orcpt(v: &str) -> Result<Orcpt, ParamError> {
    let bad = ParamError::Bad("bad ORCPT");
    let (addr_type, addr) = v.split_once(';').ok_or(bad.clone())?;
    let type_ok = !addr_type.is_empty()
        && addr_type
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-');
    let utf8 = addr_type.eq_ignore_ascii_case("utf-8");
    if v.len() > 500 || !type_ok || addr.is_empty() || !is_xtext(addr, utf8) {
        return Err(bad);
    }
    Ok(Orcpt {
        addr_type: addr_type.to_owned(),
        addr: addr.to_owned(),
    })
}

/// RFC 3461 §4: xtext = *( xchar / hexchar ); xchar = %d33-126 but "+" and "=";
/// hexchar = "+" 2(upper-case hex digit).
fn is_xtext(s: &str, utf8: bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex =
                    |c: Option<&u8>| c.is_some_and(|&c| matches!(c, b'0'..=b'9' | b'A'..=b'F'));
                if !hex(b.get(i + 1)) || !hex(b.get(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            c if utf8 && c >= 0x80 => i += 1,
            _ => return false,
        }
    }
    true
}

impl fmt::Display for MailParams {
    /// Each parameter with a leading space, in a fixed order: ` SIZE=1 BODY=8BITMIME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        if let Some(body) = self.body {
            f.write_str(match body {
                Body::SevenBit => " BODY=7BIT",
                Body::EightBitMime => " BODY=8BITMIME",
                Body::BinaryMime => " BODY=BINARYMIME",
            })?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(ret) = self.ret {
            f.write_str(match ret {
                Ret::Full => " RET=FULL",
                Ret::Hdrs => " RET=HDRS",
            })?;
        }
        if let Some(envid) = &self.envid {
            write!(f, " ENVID={envid}")?;
        }
        if let Some(auth) = &self.auth {
            write!(f, " AUTH={auth}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RcptParams {
    /// Each parameter with a leading space: ` NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.notify {
            let names = [
                (n.success, "SUCCESS"),
                (n.failure, "FAILURE"),
                (n.delay, "DELAY"),
            ];
            let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, s)| *s).collect();
            let list = if on.is_empty() {
                "NEVER".to_owned()
            } else {
                on.join(",")
            };
            write!(f, " NOTIFY={list}")?;
        }
        if let Some(o) = &self.orcpt {
            write!(f, " ORCPT={};{}", o.addr_type, o.addr)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_parameters_of_each_extension() {
        let p = parse_mail(
            " size=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=e+3Dmc2@example.com",
        )
        .expect("valid");
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("QQ314159"));
        assert_eq!(p.auth.as_deref(), Some("e+3Dmc2@example.com"));
        assert_eq!(
            p.to_string(),
            " SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=e+3Dmc2@example.com"
        );
        assert_eq!(parse_mail(""), Ok(MailParams::default()));
        assert_eq!(
            parse_mail("  AUTH=<>  ").map(|p| p.auth),
            Ok(Some("<>".into()))
        );
    }

    #[test]
    fn rcpt_parameters_from_rfc_3461() {
        let p =
            parse_rcpt(" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Big-Box.Example").expect("valid");
        assert_eq!(
            p.notify,
            Some(Notify {
                success: true,
                failure: true,
                delay: false
            })
        );
        assert_eq!(
            p.to_string(),
            " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Big-Box.Example"
        );
        let never = parse_rcpt(" notify=never").expect("valid");
        assert_eq!(never.to_string(), " NOTIFY=NEVER");
        assert!(parse_rcpt(" ORCPT=utf-8;ü@example.com").is_ok());
    }

    #[test]
    fn bad_values_and_repeats_are_501_unknown_keywords_555() {
        let bad_mail = [
            "SIZE=1",
            " SIZE",
            " SIZE=-1",
            " SIZE=1x",
            " SIZE=123456789012345678901",
            " BODY=9BIT",
            " SMTPUTF8=yes",
            " RET=ALL",
            " ENVID=a+3d",
            " ENVID=a+",
            " AUTH=a=b",
            " SIZE=1 size=2",
            " -X=1",
            " X=",
            " =1",
        ];
        for s in bad_mail {
            assert!(matches!(parse_mail(s), Err(ParamError::Bad(_))), "{s:?}");
        }
        let huge = parse_mail(" SIZE=99999999999999999999").map(|p| p.size);
        assert_eq!(huge, Ok(Some(u64::MAX)));
        let long = format!(" ENVID={}", "a".repeat(101));
        assert!(matches!(parse_mail(&long), Err(ParamError::Bad(_))));
        for s in [
            " NOTIFY=NEVER,DELAY",
            " NOTIFY=DELAY,DELAY",
            " NOTIFY=",
            " ORCPT=rfc822",
            " ORCPT=;a@b",
            " ORCPT=rfc822;ü@b",
        ] {
            assert!(matches!(parse_rcpt(s), Err(ParamError::Bad(_))), "{s:?}");
        }
        assert_eq!(
            parse_mail(" XFOO=1"),
            Err(ParamError::Unknown("XFOO".into()))
        );
        assert_eq!(
            parse_mail(" NOTIFY=NEVER"),
            Err(ParamError::Unknown("NOTIFY".into()))
        );
        assert_eq!(
            parse_rcpt(" SIZE=1"),
            Err(ParamError::Unknown("SIZE".into()))
        );
    }
}
