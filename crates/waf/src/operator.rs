//! Operators compiled once at load: `@rx` to `regex::bytes::Regex` (after [`crate::pcre`]'s
//! translation) or `fancy_regex::Regex` where only a backtracking engine has the feature,
//! `@pm` and `@pmFromFile` to one Aho-Corasick automaton, `@ipMatch` to networks,
//! `@validateByteRange` to a byte table. Arguments with a macro (`%{tx.x}`) are kept as text
//! and expanded per transaction.

use std::net::IpAddr;
use std::path::Path;

use aho_corasick::AhoCorasick;

use crate::error::ErrorKind;
use crate::pcre;

/// Which engine runs an `@rx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexEngine {
    /// The `regex` crate, on the pattern exactly as written.
    Regex,
    /// The `regex` crate, on [`crate::pcre::translate`]'s rewrite of the pattern.
    Translated,
    /// `fancy-regex`, for lookaround, backreferences, atomic groups or possessive quantifiers.
    Backtracking,
}

/// A compiled `@rx`.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A linear-time regex, matched on bytes (PCRE without UTF: `.` is any byte); with,
    /// when the pattern has a `^`, its PCRE-exact twin for values ending in a newline.
    Bytes(regex::bytes::Regex, Option<Box<fancy_regex::Regex>>),
    /// A backtracking regex, in ASCII bytes mode (also PCRE without UTF).
    Fancy(Box<fancy_regex::Regex>),
}

/// A string or number argument, literal or with `%{...}` macros to expand per transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    /// No macro: compared as is.
    Literal(String),
    /// Contains `%{...}`: expanded from the transaction before the comparison.
    Macro(String),
}

impl Argument {
    fn new(text: &str) -> Argument {
        if text.contains("%{") {
            Argument::Macro(text.to_string())
        } else {
            Argument::Literal(text.to_string())
        }
    }
}

/// An IPv4 or IPv6 network of `@ipMatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The network's address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// A compiled operator.
#[derive(Debug, Clone)]
pub enum Operator {
    /// `@rx` with a literal pattern, and the engine that runs it.
    Rx(Pattern, RegexEngine),
    /// `@rx` with a macro (CRS 920480's chained rule): compiled per transaction.
    RxMacro(String),
    /// `@pm`, `@pmFromFile`, `@pmf`: any of the phrases, case-insensitively.
    Pm(AhoCorasick),
    /// `@streq`.
    StrEq(Argument),
    /// `@strmatch`.
    StrMatch(Argument),
    /// `@contains`.
    Contains(Argument),
    /// `@containsWord`.
    ContainsWord(Argument),
    /// `@beginsWith`.
    BeginsWith(Argument),
    /// `@endsWith`.
    EndsWith(Argument),
    /// `@within`: the value is a substring of the argument.
    Within(Argument),
    /// `@eq`, `@ge`, `@gt`, `@le`, `@lt`: the name and the number (or macro).
    Compare(&'static str, Argument),
    /// `@validateByteRange`: the allowed bytes.
    ValidateByteRange(Box<[bool; 256]>),
    /// `@validateUrlEncoding`.
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`.
    ValidateUtf8Encoding,
    /// `@detectSQLi` (libinjection).
    DetectSqli,
    /// `@detectXSS` (libinjection).
    DetectXss,
    /// `@ipMatch`, `@ipMatchFromFile`.
    IpMatch(Vec<Network>),
    /// `@unconditionalMatch`.
    Unconditional,
    /// `@noMatch`.
    NoMatch,
    /// `@rbl`: accepted, never matches (no DNS from a sans-I/O engine).
    Rbl(String),
    /// `@geoLookup`: accepted, never matches (no GeoIP database).
    GeoLookup,
}

/// Compiles `@name argument`. `dir` is the rule file's directory, where `@pmFromFile` and
/// `@ipMatchFromFile` look for their data files.
pub fn compile(name: &str, argument: &str, dir: &Path) -> Result<Operator, ErrorKind> {
    crate::actions::macros(argument)?;
    let bad = |message: String| ErrorKind::BadValue {
        name: format!("@{name}"),
        message,
    };
    let op = match name.to_ascii_lowercase().as_str() {
        "rx" if argument.contains("%{") => Operator::RxMacro(argument.to_string()),
        "rx" => {
            let (pattern, engine) = compile_rx(argument)?;
            Operator::Rx(pattern, engine)
        }
        "pm" => pm(argument.split_whitespace()).map_err(bad)?,
        "pmfromfile" | "pmf" => {
            let mut phrases = Vec::new();
            for file in argument.split_whitespace() {
                phrases.extend(data_lines(dir, file).map_err(bad)?);
            }
            pm(phrases.iter().map(String::as_str)).map_err(bad)?
        }
        "streq" => Operator::StrEq(Argument::new(argument)),
        "strmatch" => Operator::StrMatch(Argument::new(argument)),
        "contains" => Operator::Contains(Argument::new(argument)),
        "containsword" => Operator::ContainsWord(Argument::new(argument)),
        "beginswith" => Operator::BeginsWith(Argument::new(argument)),
        "endswith" => Operator::EndsWith(Argument::new(argument)),
        "within" => Operator::Within(Argument::new(argument)),
        "eq" | "ge" | "gt" | "le" | "lt" => {
            let which = match name.to_ascii_lowercase().as_str() {
                "eq" => "eq",
                "ge" => "ge",
                "gt" => "gt",
                "le" => "le",
                _ => "lt",
            };
            let arg = Argument::new(argument.trim());
            if let Argument::Literal(text) = &arg
                && text.parse::<i64>().is_err()
            {
                return Err(bad(format!("`{text}` is not a number")));
            }
            Operator::Compare(which, arg)
        }
        "validatebyterange" => Operator::ValidateByteRange(byte_ranges(argument).map_err(bad)?),
        "validateurlencoding" => Operator::ValidateUrlEncoding,
        "validateutf8encoding" => Operator::ValidateUtf8Encoding,
        "detectsqli" => Operator::DetectSqli,
        "detectxss" => Operator::DetectXss,
        "ipmatch" => Operator::IpMatch(networks(argument.split(',')).map_err(bad)?),
        "ipmatchfromfile" | "ipmatchf" => {
            let lines = data_lines(dir, argument.trim()).map_err(bad)?;
            Operator::IpMatch(networks(lines.iter().map(String::as_str)).map_err(bad)?)
        }
        "unconditionalmatch" => Operator::Unconditional,
        "nomatch" => Operator::NoMatch,
        "rbl" => Operator::Rbl(argument.to_string()),
        "geolookup" => Operator::GeoLookup,
        _ => return Err(ErrorKind::UnknownOperator(name.to_string())),
    };
    Ok(op)
}

/// Compiles a PCRE pattern with ModSecurity's flags (DOTALL, MULTILINE, no UTF).
pub fn compile_rx(pcre_text: &str) -> Result<(Pattern, RegexEngine), ErrorKind> {
    let translated = pcre::translate(pcre_text);
    let mut regex_error = String::new();
    if translated.backtracking.is_empty() {
        let built = regex::bytes::RegexBuilder::new(&translated.pattern)
            .dot_matches_new_line(true)
            .multi_line(true)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(64 << 20)
            .build();
        match built {
            Ok(re) => {
                let engine = if translated.changed {
                    RegexEngine::Translated
                } else {
                    RegexEngine::Regex
                };
                let twin = match translated.carets.is_empty() {
                    true => None,
                    false => Some(Box::new(fancy(&translated.with_exact_caret())?)),
                };
                return Ok((Pattern::Bytes(re, twin), engine));
            }
            Err(e) => regex_error = format!("regex: {e}; "),
        }
    }
    match fancy(&translated.with_exact_caret()) {
        Ok(re) => Ok((Pattern::Fancy(Box::new(re)), RegexEngine::Backtracking)),
        Err(ErrorKind::Regex { message }) => Err(ErrorKind::Regex {
            message: format!("{regex_error}{message}"),
        }),
        Err(e) => Err(e),
    }
}

/// `fancy-regex` with ModSecurity's flags, on bytes (ASCII mode: PCRE without UTF).
fn fancy(pattern: &str) -> Result<fancy_regex::Regex, ErrorKind> {
    fancy_regex::RegexBuilder::new(&format!("(?sm){pattern}"))
        .bytes_mode(fancy_regex::BytesMode::Ascii)
        .backtrack_limit(1_000_000)
        .build()
        .map_err(|e| ErrorKind::Regex {
            message: format!("fancy-regex: {e}"),
        })
}

fn pm<'a>(phrases: impl Iterator<Item = &'a str>) -> Result<Operator, String> {
    let phrases: Vec<&str> = phrases.filter(|p| !p.is_empty()).collect();
    if phrases.is_empty() {
        return Err("no phrases".into());
    }
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(&phrases)
        .map(Operator::Pm)
        .map_err(|e| e.to_string())
}

/// A data file's lines, without blank lines and `#` comments, found beside the rule file.
fn data_lines(dir: &Path, file: &str) -> Result<Vec<String>, String> {
    if file.starts_with("http://") || file.starts_with("https://") {
        return Err(format!("{file}: data files from URLs are not fetched"));
    }
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `9,10,13,32-126` to a table of the allowed bytes.
fn byte_ranges(text: &str) -> Result<Box<[bool; 256]>, String> {
    let mut allowed = Box::new([false; 256]);
    for part in text.split(',').map(str::trim) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("bad byte range `{part}`"))
        };
        let (low, high) = (parse(low)?, parse(high)?);
        if low > high {
            return Err(format!("bad byte range `{part}`"));
        }
        for b in low..=high {
            allowed[usize::from(b)] = true;
        }
    }
    Ok(allowed)
}

fn networks<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<Network>, String> {
    let mut out = Vec::new();
    for item in items.map(str::trim).filter(|i| !i.is_empty()) {
        let (addr, prefix) = item.split_once('/').unwrap_or((item, ""));
        let addr: IpAddr = addr.parse().map_err(|_| format!("bad address `{item}`"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or(format!("bad prefix `{item}`"))?
        };
        out.push(Network { addr, prefix });
    }
    if out.is_empty() {
        return Err("no addresses".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, arg: &str) -> Result<Operator, ErrorKind> {
        compile(name, arg, Path::new("/nonexistent"))
    }

    #[test]
    fn rx_engines() {
        assert!(matches!(
            op("rx", r"^\d+$"),
            Ok(Operator::Rx(_, RegexEngine::Regex))
        ));
        assert!(matches!(
            op("rx", r"{{.*?}}"),
            Ok(Operator::Rx(_, RegexEngine::Translated))
        ));
        assert!(matches!(
            op("rx", r"<\?(?!xml)"),
            Ok(Operator::Rx(_, RegexEngine::Backtracking))
        ));
        assert!(matches!(op("rx", r"^%{tx.x}$"), Ok(Operator::RxMacro(_))));
        assert!(matches!(op("rx", r"(a"), Err(ErrorKind::Regex { .. })));
    }

    #[test]
    fn arguments_and_errors() {
        assert!(matches!(
            op("eq", "0"),
            Ok(Operator::Compare("eq", Argument::Literal(_)))
        ));
        assert!(matches!(
            op("lt", "%{tx.paranoia_level}"),
            Ok(Operator::Compare("lt", Argument::Macro(_)))
        ));
        assert!(matches!(op("ge", "x"), Err(ErrorKind::BadValue { .. })));
        assert!(
            matches!(op("verifyCC", "x"), Err(ErrorKind::UnknownOperator(n)) if n == "verifyCC")
        );
        assert!(matches!(
            op("pmFromFile", "missing.data"),
            Err(ErrorKind::BadValue { .. })
        ));
    }

    #[test]
    fn byte_ranges_and_networks() {
        let Ok(Operator::ValidateByteRange(t)) = op("validateByteRange", "9,10,13,32-126") else {
            panic!("compiles");
        };
        assert!(t[9] && t[32] && t[126] && !t[0] && !t[127]);
        assert!(op("validateByteRange", "1-x").is_err());
        let Ok(Operator::IpMatch(n)) = op("ipMatch", "127.0.0.1,::1,10.0.0.0/8") else {
            panic!("compiles");
        };
        assert_eq!(n.len(), 3);
        assert_eq!(n[2].prefix, 8);
        assert!(op("ipMatch", "10.0.0.0/33").is_err());
    }
}
