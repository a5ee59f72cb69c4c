//! SecLang text to directives: the lexer (comments, `\` line continuations, quoted arguments)
//! and the parsers of a SecRule's three arguments (variables, operator, actions). Names are
//! not checked here: [`crate::rules`] knows which ones exist.

use std::path::Path;
use std::sync::Arc;

use crate::error::{ErrorKind, LoadError, Location};

/// One directive as written: its name, its arguments with quotes removed, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirective {
    /// Where the directive's first line is.
    pub at: Location,
    /// The directive's name, as written (`SecRule`).
    pub name: String,
    /// The arguments, unquoted: `\"` inside double quotes is `"`, other backslashes are kept
    /// (they belong to regexes), as Apache's `ap_getword_conf` reads them.
    pub args: Vec<String>,
}

impl RawDirective {
    /// An error at this directive.
    pub fn error(&self, kind: ErrorKind) -> LoadError {
        LoadError::new(self.at.clone(), &self.name, kind)
    }
}

/// Splits a file's text into directives. Comments are lines whose first non-blank character
/// is `#`; a `\` at the end of a line joins the next line to it (the backslash and newline
/// removed, the next line's indentation kept, as Apache does).
pub fn lex(file: &Path, text: &str) -> Result<Vec<RawDirective>, Vec<LoadError>> {
    let file: Arc<Path> = Arc::from(file);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let mut logical = line.trim_end().to_string();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_end()),
                None => break,
            }
        }
        let trimmed = logical.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = Location {
            file: file.clone(),
            line: index + 1,
        };
        match split_words(trimmed) {
            Ok(mut words) => {
                let name = words.remove(0);
                out.push(RawDirective {
                    at,
                    name,
                    args: words,
                });
            }
            Err(message) => {
                let name = trimmed.split_whitespace().next().unwrap_or("").to_string();
                errors.push(LoadError::new(at, &name, ErrorKind::Syntax(message)));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Whitespace-separated words; a word may be quoted with `"` or `'`, and inside quotes only
/// the quote character itself is escaped by a backslash.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    word.push(first);
                    chars.next();
                } else if c == first {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated quoted argument: {first}{word}"));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!(
                    "text right after the closing quote of {first}{word}{first}"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// Which part of a variable's collection a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `ARGS:name`: one key, compared case-insensitively by ModSecurity.
    Key(String),
    /// `ARGS:/^json\./`: the keys a regex matches.
    Regex(String),
}

/// One element of a rule's variable list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The collection's name, upper-cased (`ARGS`, `TX`).
    pub name: String,
    /// The key or key regex after `:`, if any.
    pub selector: Option<Selector>,
    /// `&ARGS`: the number of elements rather than their values.
    pub count: bool,
    /// `!ARGS:foo`: removes elements from the list instead of adding.
    pub exclude: bool,
}

/// Parses `REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|&ARGS|XML:/*`. A regex selector may contain
/// `|`, so the list is read element by element rather than split.
pub fn parse_variables(text: &str) -> Result<Vec<Variable>, String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let mut variable = Variable {
            name: String::new(),
            selector: None,
            count: false,
            exclude: false,
        };
        if bytes[i] == b'!' {
            variable.exclude = true;
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'&' {
            variable.count = true;
            i += 1;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if start == i {
            return Err(format!("a variable name expected at `{}`", &text[start..]));
        }
        variable.name = text[start..i].to_ascii_uppercase();
        if i < bytes.len() && bytes[i] == b':' {
            i += 1;
            // `XML:/*` is an XPath expression, not a regex.
            let (selector, next) = if variable.name == "XML" {
                let end = text[i..].find('|').map_or(text.len(), |e| i + e);
                (Selector::Key(text[i..end].to_string()), end)
            } else {
                read_selector(text, i)?
            };
            variable.selector = Some(selector);
            i = next;
        }
        out.push(variable);
        if i < bytes.len() {
            if bytes[i] != b'|' {
                return Err(format!(
                    "`|` expected between variables at `{}`",
                    &text[i..]
                ));
            }
            i += 1;
        }
    }
    if out.is_empty() {
        return Err("no variables".into());
    }
    Ok(out)
}

/// Reads the selector starting at `i`: `/regex/`, `'quoted'` (possibly `'/regex/'`), or
/// plain text up to the next `|`. Returns it and the index after it.
fn read_selector(text: &str, i: usize) -> Result<(Selector, usize), String> {
    let rest = &text[i..];
    let delimited = |quote: char| -> Result<(String, usize), String> {
        let mut escaped = false;
        for (k, c) in rest.char_indices().skip(1) {
            if c == quote && !escaped {
                return Ok((rest[1..k].to_string(), i + k + 1));
            }
            escaped = c == '\\' && !escaped;
        }
        Err(format!("unterminated selector `{rest}`"))
    };
    if rest.starts_with('/') {
        let (pattern, next) = delimited('/')?;
        return Ok((Selector::Regex(pattern), next));
    }
    if rest.starts_with('\'') {
        let (inner, next) = delimited('\'')?;
        let selector = match inner.strip_prefix('/').and_then(|s| s.strip_suffix('/')) {
            Some(pattern) if inner.len() >= 2 => Selector::Regex(pattern.to_string()),
            _ => Selector::Key(inner),
        };
        return Ok((selector, next));
    }
    let end = rest.find('|').unwrap_or(rest.len());
    Ok((Selector::Key(rest[..end].to_string()), i + end))
}

/// A rule's operator as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSpec {
    /// `!@rx`: the rule matches when the operator does not.
    pub negated: bool,
    /// The operator's name without `@` (`rx` when the operator was implicit).
    pub name: String,
    /// Its argument, leading whitespace removed (`@rx` keeps everything after one space).
    pub argument: String,
}

/// Parses `@rx ^foo`, `!@streq GET`, or a bare regex (the implicit `@rx`).
pub fn parse_operator(text: &str) -> OperatorSpec {
    let (negated, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match text.strip_prefix('@') {
        Some(rest) => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let argument = rest[end..].trim_start().to_string();
            OperatorSpec {
                negated,
                name: rest[..end].to_string(),
                argument,
            }
        }
        None => OperatorSpec {
            negated,
            name: "rx".into(),
            argument: text.to_string(),
        },
    }
}

/// One action as written: `msg:'text'` is name `msg`, value `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// The action's name (`setvar`, `t`, `ctl`).
    pub name: String,
    /// What follows the first `:`, unquoted (`\'` inside single quotes is `'`).
    pub value: Option<String>,
}

/// Parses `id:1,phase:2,t:none,msg:'a, b',setvar:'tx.x=+%{tx.y}'`.
pub fn parse_actions(text: &str) -> Result<Vec<ActionSpec>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(format!("an action name expected in `{text}`"));
        }
        let mut value = None;
        if chars.peek() == Some(&':') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'\'') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if chars.peek() == Some(&'\'') => {
                            v.push('\'');
                            chars.next();
                        }
                        '\'' => {
                            closed = true;
                            break;
                        }
                        _ => v.push(c),
                    }
                }
                if !closed {
                    return Err(format!("unterminated quote in action `{name}`"));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v = v.trim_end().to_string();
            }
            value = Some(v);
        }
        out.push(ActionSpec { name, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> RawDirective {
        let mut all = lex(Path::new("t.conf"), text).expect("lexes");
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn crs_rule_with_continuations_and_comments() {
        let text = "# comment\n\
            SecRule REQUEST_HEADERS:Content-Length \"!@rx ^\\d+$\" \\\n    \"id:920160,\\\n    phase:1,\\\n    block,\\\n    t:none,\\\n    msg:'Content-Length HTTP header is not numeric',\\\n    setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'\"\n";
        let d = one(text);
        assert_eq!(d.at.line, 2);
        assert_eq!(d.name, "SecRule");
        assert_eq!(d.args[0], "REQUEST_HEADERS:Content-Length");
        assert_eq!(d.args[1], "!@rx ^\\d+$");
        let actions = parse_actions(&d.args[2]).expect("actions");
        assert_eq!(actions.len(), 6);
        assert_eq!(
            actions[0],
            ActionSpec {
                name: "id".into(),
                value: Some("920160".into())
            }
        );
        assert_eq!(actions[2].value, None);
        assert_eq!(
            actions[4].value.as_deref(),
            Some("Content-Length HTTP header is not numeric")
        );
        assert_eq!(
            actions[5].value.as_deref(),
            Some("tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}")
        );
        let op = parse_operator(&d.args[1]);
        assert!(op.negated);
        assert_eq!((op.name.as_str(), op.argument.as_str()), ("rx", "^\\d+$"));
    }

    /// REQUEST-920-PROTOCOL-ENFORCEMENT.conf's rule 920170 as CRS 3.3.4 writes it: a chain
    /// of two rules, each over several continued lines, the second indented.
    #[test]
    fn crs_920170_chain() {
        let text = r#"#
SecRule REQUEST_METHOD "@rx ^(?:GET|HEAD)$" \
    "id:920170,\
    phase:2,\
    block,\
    t:none,\
    msg:'GET or HEAD Request with Body Content',\
    logdata:'%{MATCHED_VAR}',\
    tag:'application-multi',\
    tag:'capec/1000/210/272',\
    ver:'OWASP_CRS/3.3.4',\
    severity:'CRITICAL',\
    chain"
    SecRule REQUEST_HEADERS:Content-Length "!@rx ^0?$" \
        "t:none,\
        setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
"#;
        let all = lex(Path::new("920.conf"), text).expect("lexes");
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].at.line, all[1].at.line), (2, 14));
        assert_eq!(all[1].name, "SecRule");
        let first = parse_actions(&all[0].args[2]).expect("actions");
        let names: Vec<_> = first.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "id", "phase", "block", "t", "msg", "logdata", "tag", "tag", "ver", "severity",
                "chain"
            ]
        );
        assert_eq!(first[5].value.as_deref(), Some("%{MATCHED_VAR}"));
        assert_eq!(parse_operator(&all[1].args[1]).argument, "^0?$");
        let second = parse_actions(&all[1].args[2]).expect("actions");
        assert_eq!(
            second[1].value.as_deref(),
            Some("tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}")
        );
    }

    /// crs-setup.conf's SecAction 900990.
    #[test]
    fn crs_setup_sec_action() {
        let text = "SecAction \\\n    \"id:900990,\\\n    phase:1,\\\n    nolog,\\\n    pass,\\\n    t:none,\\\n    setvar:tx.crs_setup_version=334\"\n";
        let d = one(text);
        assert_eq!(d.args.len(), 1);
        let actions = parse_actions(&d.args[0]).expect("actions");
        assert_eq!(
            actions[5].value.as_deref(),
            Some("tx.crs_setup_version=334")
        );
    }

    #[test]
    fn escaped_quote_inside_double_quotes() {
        // REQUEST-941: the regex contains `[\"']`, and ModSecurity hands PCRE `["']`.
        let d = one(r#"SecRule ARGS "@rx a[\"']b" "id:1""#);
        assert_eq!(d.args[1], r#"@rx a["']b"#);
        let d = one(r#"SecRule ARGS "@rx \\\d" "id:1""#);
        assert_eq!(d.args[1], r"@rx \\\d");
    }

    #[test]
    fn variable_lists() {
        let v = parse_variables(
            "REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|REQUEST_HEADERS:User-Agent|&ARGS|XML:/*",
        )
        .expect("variables");
        assert_eq!(v.len(), 5);
        assert!(v[1].exclude);
        assert_eq!(v[1].selector, Some(Selector::Regex("__utm".into())));
        assert_eq!(v[2].selector, Some(Selector::Key("User-Agent".into())));
        assert!(v[3].count && v[3].selector.is_none());
        assert_eq!(v[4].selector, Some(Selector::Key("/*".into())));
        let v = parse_variables("ARGS:/a|b/|TX:foo|tx:'/^x/'").expect("variables");
        assert_eq!(v[0].selector, Some(Selector::Regex("a|b".into())));
        assert_eq!(v[1].selector, Some(Selector::Key("foo".into())));
        assert_eq!(v[2].name, "TX");
        assert_eq!(v[2].selector, Some(Selector::Regex("^x".into())));
        assert!(parse_variables("ARGS||TX").is_err());
        assert!(parse_variables("ARGS:/open").is_err());
    }

    #[test]
    fn operators() {
        let op = parse_operator("@pmFromFile scanners-user-agents.data");
        assert_eq!(op.name, "pmFromFile");
        assert_eq!(op.argument, "scanners-user-agents.data");
        let op = parse_operator("^(?:GET|HEAD)$");
        assert_eq!((op.name.as_str(), op.negated), ("rx", false));
        assert_eq!(parse_operator("@unconditionalMatch").argument, "");
        assert!(parse_operator("!@within %{tx.allowed_methods}").negated);
    }

    #[test]
    fn actions_ctl_and_transformations() {
        let a = parse_actions(
            "id:9001000,phase:1,pass,t:none,t:lowercase,nolog,ctl:ruleRemoveTargetById=942100;ARGS:x,chain",
        )
        .expect("actions");
        assert_eq!(a[3].value.as_deref(), Some("none"));
        assert_eq!(
            a[6].value.as_deref(),
            Some("ruleRemoveTargetById=942100;ARGS:x")
        );
        assert_eq!(a[7].name, "chain");
        assert!(parse_actions("msg:'open").is_err());
        let a = parse_actions("logdata:'it\\'s %{TX.0}'").expect("actions");
        assert_eq!(a[0].value.as_deref(), Some("it's %{TX.0}"));
    }

    #[test]
    fn syntax_errors_carry_file_and_line() {
        let errors = lex(Path::new("x.conf"), "SecMarker A\n\nSecRule ARGS \"@rx a").unwrap_err();
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(text.starts_with("x.conf:3: SecRule:"), "{text}");
    }
}
