//! A rule's actions checked at load: every name known, `t:` split off into transformations,
//! and the values the engine will read (`id`, `phase`, `severity`, `setvar`, `skip`,
//! `status`, `ctl`) validated, so that a typo fails `gatehouse check` instead of a request.

use crate::error::ErrorKind;
use crate::names;
use crate::parse::ActionSpec;
use crate::transform::{self, Transformation};

/// One action other than `t:`, by its canonical name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The name as ModSecurity spells it (`skipAfter`), whatever case the file used.
    pub name: &'static str,
    /// The value after `:`, unquoted.
    pub value: Option<String>,
}

/// A rule's actions once checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Actions other than `t:`, in file order.
    pub actions: Vec<Action>,
    /// The `t:` list in order; `None` stands for `t:none` (which clears what came before).
    pub transformations: Vec<Option<Transformation>>,
}

impl Checked {
    /// The value of the first action named `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.actions
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }

    /// Whether an action named `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.actions.iter().any(|a| a.name == name)
    }
}

/// Checks each action's name and value.
pub fn check(specs: &[ActionSpec]) -> Result<Checked, ErrorKind> {
    let mut out = Checked::default();
    for spec in specs {
        let name = names::find(names::ACTIONS, &spec.name)
            .ok_or_else(|| ErrorKind::UnknownAction(spec.name.clone()))?;
        let value = spec.value.as_deref();
        let bad = |message: &str| ErrorKind::BadValue {
            name: name.into(),
            message: message.into(),
        };
        let needs_value = || {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad("a value is required"))
        };
        match name {
            "t" => {
                let v = needs_value()?;
                let t = transform::by_name(v)?;
                out.transformations.push(t);
                continue;
            }
            "id" => {
                id(needs_value()?).ok_or_else(|| bad("not a positive integer"))?;
            }
            "phase" => {
                phase(needs_value()?)
                    .ok_or_else(|| bad("not 1-5, request, response or logging"))?;
            }
            "severity" => {
                severity(needs_value()?).ok_or_else(|| bad("not 0-7 or a syslog level name"))?;
            }
            "skip" | "status" => {
                needs_value()?
                    .parse::<u32>()
                    .map_err(|_| bad("not a number"))?;
            }
            "setvar" => {
                let v = needs_value()?;
                setvar(v).map_err(|m| bad(&m))?;
                macros(v)?;
            }
            "ctl" => {
                let v = needs_value()?;
                let (option, setting) = v
                    .split_once('=')
                    .ok_or_else(|| bad("`option=value` expected"))?;
                let option = names::find(names::CTL_OPTIONS, option.trim())
                    .ok_or_else(|| ErrorKind::UnknownAction(format!("ctl:{}", option.trim())))?;
                // `ruleRemoveTargetById=942100;ARGS:password`: the target must be a variable.
                if option.starts_with("ruleRemoveTarget") {
                    let (_, target) = setting
                        .split_once(';')
                        .ok_or_else(|| bad("`rule;TARGET` expected"))?;
                    known_variables(target)?;
                }
            }
            "msg" | "logdata" | "tag" | "ver" | "rev" | "maturity" | "accuracy" | "skipAfter"
            | "initcol" | "expirevar" | "redirect" | "setenv" | "xmlns" => {
                macros(needs_value()?)?;
            }
            _ => {}
        }
        out.actions.push(Action {
            name,
            value: spec.value.clone(),
        });
    }
    Ok(out)
}

/// Every variable a `%{collection.key}` macro in `text` names must be known.
pub fn macros(text: &str) -> Result<(), ErrorKind> {
    for (start, _) in text.match_indices("%{") {
        let inner = &text[start + 2..];
        let end = inner.find(['.', '}']).unwrap_or(inner.len());
        let name = inner[..end].to_ascii_uppercase();
        if names::find(names::VARIABLES, &name).is_none() {
            return Err(ErrorKind::UnknownVariable(name));
        }
    }
    Ok(())
}

fn known_variables(text: &str) -> Result<(), ErrorKind> {
    for v in crate::parse::parse_variables(text).map_err(ErrorKind::Syntax)? {
        if names::find(names::VARIABLES, &v.name).is_none() {
            return Err(ErrorKind::UnknownVariable(v.name));
        }
    }
    Ok(())
}

/// `id:920160`.
pub fn id(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|id| *id > 0)
}

/// `phase:2`, `phase:request` (2), `phase:response` (4), `phase:logging` (5).
pub fn phase(text: &str) -> Option<u8> {
    match text.trim().to_ascii_lowercase().as_str() {
        "request" => Some(2),
        "response" => Some(4),
        "logging" => Some(5),
        other => other.parse::<u8>().ok().filter(|p| (1..=5).contains(p)),
    }
}

/// `severity:2` or `severity:'CRITICAL'`, to the syslog level (0 is EMERGENCY).
pub fn severity(text: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "EMERGENCY",
        "ALERT",
        "CRITICAL",
        "ERROR",
        "WARNING",
        "NOTICE",
        "INFO",
        "DEBUG",
    ];
    let text = text.trim();
    match text.parse::<u8>() {
        Ok(n) if n < 8 => Some(n),
        Ok(_) => None,
        Err(_) => LEVELS
            .iter()
            .position(|l| l.eq_ignore_ascii_case(text))
            .map(|p| p as u8),
    }
}

/// `setvar:tx.score=+5`, `setvar:!tx.flag`, `setvar:ip.reput_block_flag=1`: a collection,
/// a dot, a name; then nothing (set to 1) or `=`, `=+`, `=-` and a value.
fn setvar(text: &str) -> Result<(), String> {
    let target = text.strip_prefix('!').unwrap_or(text);
    let name = target.split_once('=').map_or(target, |(n, _)| n);
    let (collection, key) = name
        .split_once('.')
        .ok_or(format!("`{text}`: collection.name expected"))?;
    let known = ["tx", "ip", "global", "session", "user", "resource"];
    if !known
        .iter()
        .any(|c| c.eq_ignore_ascii_case(collection.trim()))
    {
        return Err(format!(
            "`{collection}` is not a collection setvar can write"
        ));
    }
    if key.trim().is_empty() {
        return Err(format!("`{text}`: empty variable name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_actions;

    fn checked(text: &str) -> Result<Checked, ErrorKind> {
        check(&parse_actions(text).expect("parses"))
    }

    #[test]
    fn crs_actions_check() {
        let c = checked(
            "id:942100,phase:2,block,capture,t:none,t:utf8toUnicode,t:urlDecodeUni,t:removeNulls,\
             msg:'SQL Injection Attack Detected via libinjection',logdata:'Matched Data: %{TX.0}',\
             tag:'attack-sqli',ver:'OWASP_CRS/3.3.4',severity:'CRITICAL',multiMatch,\
             setvar:'tx.sql_injection_score=+%{tx.critical_anomaly_score}',\
             ctl:ruleRemoveTargetById=942100;ARGS:x,skipAfter:END-REQUEST-942",
        )
        .expect("checks");
        assert_eq!(c.value("id"), Some("942100"));
        assert_eq!(c.transformations.len(), 4);
        assert_eq!(c.transformations[0], None);
        assert!(c.has("multiMatch") && c.has("capture"));
        assert_eq!(severity("CRITICAL"), Some(2));
        assert_eq!(phase("request"), Some(2));
        assert_eq!(phase("6"), None);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            checked("id:1,exec:/bin/sh"),
            Err(ErrorKind::UnknownAction("exec".into()))
        );
        assert_eq!(
            checked("id:1,t:rot13"),
            Err(ErrorKind::UnknownTransformation("rot13".into()))
        );
        assert_eq!(
            checked("ctl:fooBar=1"),
            Err(ErrorKind::UnknownAction("ctl:fooBar".into()))
        );
        assert!(matches!(checked("id:x"), Err(ErrorKind::BadValue { .. })));
        assert!(matches!(
            checked("setvar:score=1"),
            Err(ErrorKind::BadValue { .. })
        ));
        assert!(matches!(
            checked("severity:'HUGE'"),
            Err(ErrorKind::BadValue { .. })
        ));
        assert!(checked("setvar:!tx.flag,setvar:ip.x=-1,PASS,NoLog").is_ok());
        assert_eq!(
            checked("ctl:ruleRemoveTargetById=942100;ARGZ:x"),
            Err(ErrorKind::UnknownVariable("ARGZ".into()))
        );
        assert_eq!(
            checked("msg:'%{MATCHED_VAR} %{tx.x} %{foo.bar}'"),
            Err(ErrorKind::UnknownVariable("FOO".into()))
        );
        assert!(checked("logdata:'%{MATCHED_VAR_NAME}: %{request_headers.host}'").is_ok());
    }
}
