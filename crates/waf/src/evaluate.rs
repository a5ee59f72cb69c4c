//! Operators applied to one (already transformed) value, as ModSecurity v3 applies them.
//! A rule's `!` negation is the rule's business, not the operator's. Macros (`%{tx.x}`) are
//! expanded by the caller's [`Macros`], since the transaction owns the collections.

use std::net::IpAddr;

use crate::operator::{Argument, Network, Operator, Pattern};

/// Expands `%{collection.key}` macros in an operator's argument.
pub trait Macros {
    /// `text` with each macro replaced by its value (an unknown one by nothing).
    fn expand(&self, text: &str) -> String;
}

/// No transaction: macros expand to nothing (for operators without macros, and for tests).
pub struct NoMacros;

impl Macros for NoMacros {
    fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            out.push_str(&rest[..start]);
            match rest[start..].find('}') {
                Some(end) => rest = &rest[start + end + 1..],
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

impl Pattern {
    /// Whether the pattern matches somewhere in `value`. A value ending in a newline goes to
    /// the PCRE-exact twin of a pattern with `^`, if it has one. The backtracking engine counts
    /// hitting its backtrack limit as no match, as ModSecurity does when PCRE's match limit
    /// is exceeded.
    pub fn is_match(&self, value: &[u8]) -> bool {
        match self {
            Pattern::Bytes(_, Some(twin)) if value.ends_with(b"\n") => {
                twin.is_match(value).unwrap_or(false)
            }
            Pattern::Bytes(re, _) => re.is_match(value),
            Pattern::Fancy(re) => re.is_match(value).unwrap_or(false),
        }
    }
}

impl Operator {
    /// Whether the operator matches `value`.
    pub fn matches(&self, value: &[u8], macros: &dyn Macros) -> bool {
        let arg = |a: &Argument| match a {
            Argument::Literal(text) => text.clone().into_bytes(),
            Argument::Macro(text) => macros.expand(text).into_bytes(),
        };
        match self {
            Operator::Rx(pattern, _) => pattern.is_match(value),
            Operator::RxMacro(text) => crate::operator::compile_rx(&macros.expand(text))
                .is_ok_and(|(pattern, _)| pattern.is_match(value)),
            Operator::Pm(automaton) => automaton.is_match(value),
            Operator::StrEq(a) => value == arg(a).as_slice(),
            Operator::StrMatch(a) | Operator::Contains(a) => contains(value, &arg(a)),
            Operator::ContainsWord(a) => contains_word(value, &arg(a)),
            Operator::BeginsWith(a) => value.starts_with(&arg(a)),
            Operator::EndsWith(a) => value.ends_with(&arg(a)),
            Operator::Within(a) => contains(&arg(a), value),
            Operator::Compare(which, a) => {
                let (left, right) = (number(value), number(&arg(a)));
                match *which {
                    "eq" => left == right,
                    "ge" => left >= right,
                    "gt" => left > right,
                    "le" => left <= right,
                    _ => left < right,
                }
            }
            Operator::ValidateByteRange(allowed) => value.iter().any(|&b| !allowed[usize::from(b)]),
            Operator::ValidateUrlEncoding => !valid_url_encoding(value),
            Operator::ValidateUtf8Encoding => std::str::from_utf8(value).is_err(),
            Operator::IpMatch(networks) => ip_match(value, networks),
            Operator::Unconditional => true,
            // No libinjection, DNS or GeoIP here: see the load warnings.
            Operator::DetectSqli
            | Operator::DetectXss
            | Operator::NoMatch
            | Operator::Rbl(_)
            | Operator::GeoLookup => false,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || memchr::memmem::find(haystack, needle).is_some()
}

/// `@containsWord`: the argument with a byte that is not an ASCII letter (digits and `_`
/// are boundaries to ModSecurity v3) or the value's edge on each side.
fn contains_word(value: &[u8], word: &[u8]) -> bool {
    if word.is_empty() {
        return true;
    }
    let boundary = |i: Option<&u8>| i.is_none_or(|c| !c.is_ascii_alphabetic());
    memchr::memmem::find_iter(value, word).any(|at| {
        let before = at.checked_sub(1).and_then(|i| value.get(i));
        boundary(before) && boundary(value.get(at + word.len()))
    })
}

/// A value read as a number the way `std::stoi` reads it (ModSecurity's numeric operators):
/// leading whitespace, an optional sign, digits; no digits or a value outside `int` is 0.
fn number(value: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(value);
    let text = text.trim_start();
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let end = digits
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let value = digits[..end].parse::<i64>().map_or(0, |v| sign * v);
    if i64::from(i32::MIN) <= value && value <= i64::from(i32::MAX) {
        value
    } else {
        0
    }
}

/// Every `%` followed by two hex digits.
fn valid_url_encoding(value: &[u8]) -> bool {
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let pair = value.get(i + 1..i + 3);
            if !pair.is_some_and(|p| p.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn ip_match(value: &[u8], networks: &[Network]) -> bool {
    let Ok(addr) = String::from_utf8_lossy(value).trim().parse::<IpAddr>() else {
        return false;
    };
    networks.iter().any(|n| match (addr, n.addr) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(&a.octets(), &b.octets(), n.prefix),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(&a.octets(), &b.octets(), n.prefix),
        _ => false,
    })
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (bytes, bits) = (usize::from(prefix / 8), prefix % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::operator::compile;

    struct Tx;
    impl Macros for Tx {
        fn expand(&self, text: &str) -> String {
            text.replace("%{tx.allowed_methods}", "GET HEAD POST")
                .replace("%{tx.paranoia_level}", "2")
                .replace("%{tx.charsets}", "utf-8|iso-8859-1")
        }
    }

    fn m(name: &str, arg: &str, value: &[u8]) -> bool {
        compile(name, arg, Path::new("."))
            .expect("compiles")
            .matches(value, &Tx)
    }

    #[test]
    fn rx_by_each_engine() {
        // 920160's pattern, regex as written.
        assert!(m("rx", r"^\d+$", b"123") && !m("rx", r"^\d+$", b"12a"));
        // DOTALL + MULTILINE: `$` before a newline, `.` across it.
        assert!(m("rx", r"^a$", b"x\na\ny") && m("rx", r"a.b", b"a\nb"));
        // 941380, translated.
        assert!(m("rx", r"{{.*?}}", b"{{7*7}}"));
        // 953120, backtracking.
        assert!(m("rx", r"<\?(?!xml)", b"<?php") && !m("rx", r"<\?(?!xml)", b"<?xml"));
        // PCRE's `^` does not match after a final newline.
        assert!(!m("rx", "^$", b"x\n") && m("rx", "^$", b"\n") && m("rx", "^$", b""));
        assert!(m("rx", "^a$", b"x\na\n") && !m("rx", "^0?$", b"1\n"));
        // Bytes that are not UTF-8 are bytes to both engines.
        assert!(m("rx", r"^.(?!x)$", b"\xFF") && m("rx", r"^.$", b"\xFF"));
        // 920480's chained rule: a macro, compiled per value.
        assert!(m("rx", r"^%{tx.charsets}$", b"utf-8") && !m("rx", r"^%{tx.charsets}$", b"koi8-r"));
    }

    #[test]
    fn phrase_and_string_operators() {
        assert!(m("pm", "nikto sqlmap", b"Mozilla SQLMap/1.0"));
        assert!(!m("pm", "nikto sqlmap", b"curl/8"));
        assert!(m("streq", "POST", b"POST") && !m("streq", "POST", b"post"));
        assert!(m("contains", "..", b"/a/../b") && m("strmatch", "ab", b"xaby"));
        assert!(
            m("containsWord", "select", b"1 select(2)")
                && !m("containsWord", "select", b"selected")
        );
        assert!(m("beginsWith", "/admin", b"/admin/x") && m("endsWith", ".php", b"a.php"));
        assert!(m("within", "%{tx.allowed_methods}", b"HEAD"));
        assert!(!m("within", "%{tx.allowed_methods}", b"PUT"));
    }

    #[test]
    fn numeric_comparisons_read_numbers_like_atoi() {
        assert!(m("eq", "0", b"") && m("eq", "0", b"abc") && m("eq", "12", b" 12px"));
        assert!(m("ge", "%{tx.paranoia_level}", b"2") && !m("gt", "%{tx.paranoia_level}", b"2"));
        assert!(m("lt", "2", b"-5") && m("le", "2", b"2"));
        assert!(m("eq", "0", b"99999999999") && m("eq", "-2147483648", b"-2147483648"));
    }

    #[test]
    fn validation_operators_match_on_violations() {
        assert!(
            m("validateByteRange", "32-126", b"ok\x00") && !m("validateByteRange", "32-126", b"ok")
        );
        assert!(m("validateUrlEncoding", "", b"a%2") && m("validateUrlEncoding", "", b"%zz"));
        assert!(!m("validateUrlEncoding", "", b"a%20b"));
        assert!(
            m("validateUtf8Encoding", "", b"\xC0\xAF")
                && !m("validateUtf8Encoding", "", "é".as_bytes())
        );
    }

    #[test]
    fn ip_networks() {
        assert!(m(
            "ipMatch",
            "127.0.0.1,10.0.0.0/8,2001:db8::/32",
            b"10.1.2.3"
        ));
        assert!(m("ipMatch", "192.168.0.0/23", b"192.168.1.200"));
        assert!(!m("ipMatch", "192.168.0.0/23", b"192.168.2.1"));
        assert!(m("ipMatch", "2001:db8::/32", b"2001:db8::1") && !m("ipMatch", "::1", b"garbage"));
    }

    #[test]
    fn never_matching_operators() {
        assert!(m("unconditionalMatch", "", b"") && !m("noMatch", "", b"x"));
        assert!(!m("rbl", "dnsbl.example", b"1.2.3.4") && !m("geoLookup", "", b"1.2.3.4"));
        assert_eq!(NoMacros.expand("a%{tx.x}b%{open"), "ab%{open");
    }
}
