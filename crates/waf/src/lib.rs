//! gatehouse's WAF engine, sans-I/O: it loads OWASP CRS SecLang rule files as they are and
//! compiles them once (request parts in, verdict out comes with the evaluation, later).
//!
//! The load pipeline, one module a step:
//! `files -> parse (directives, file:line) -> rules (names checked, chains, removals)
//! -> operator (regexes and automata compiled) -> Ruleset`, with [`pcre`] rewriting PCRE-only
//! syntax for the `regex` crate and [`transform`] holding the transformations.
//!
//! [`load`] reports every error at once, each naming the file, the line and the directive.
//! Nothing unknown is skipped: an unknown directive, variable, operator, transformation,
//! action or `ctl:` option is an error naming it. `@rbl` and `@geoLookup` load but never
//! match (a sans-I/O engine has no DNS and no GeoIP database): each rule using them is a
//! [`Warning`], and so is each `@detectSQLi` / `@detectXSS` until libinjection is in.
//! [`evaluate`] applies an operator to one value; the transaction around it comes later.
#![deny(missing_docs)]

pub mod actions;
pub mod error;
pub mod evaluate;
mod files;
pub mod names;
pub mod operator;
pub mod parse;
pub mod pcre;
pub mod rules;
pub mod transform;

use std::path::Path;

pub use error::{ErrorKind, LoadError, Location, Warning};
pub use operator::{Operator, RegexEngine};
pub use rules::{Entry, Rule, Setting};

/// A loaded, compiled rule set.
#[derive(Debug)]
pub struct Ruleset {
    /// Rules and markers in file order (rules removed by `SecRuleRemoveBy*` are gone).
    pub entries: Vec<Entry>,
    /// `SecDefaultAction` of each phase (index 0 is phase 1), as last set.
    pub default_actions: [Vec<actions::Action>; 5],
    /// The configuration directives, in file order.
    pub settings: Vec<Setting>,
    /// Rules that load but will not act as written.
    pub warnings: Vec<Warning>,
    /// Counts, for `gatehouse check` and the load test.
    pub stats: Stats,
}

/// What a load produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Directives read.
    pub directives: usize,
    /// Rules with an id (chains counted once).
    pub rules: usize,
    /// Rule links after a chain's first.
    pub chained_links: usize,
    /// `SecMarker`s.
    pub markers: usize,
    /// `@rx` compiled by `regex` as written.
    pub rx_regex: usize,
    /// `@rx` compiled by `regex` after [`pcre::translate`] rewrote them.
    pub rx_translated: usize,
    /// `@rx` compiled by `fancy-regex`.
    pub rx_backtracking: usize,
    /// `@rx` holding a macro, compiled per transaction.
    pub rx_macro: usize,
    /// `@rx` on `regex` that also have a `fancy-regex` twin for values ending in a newline
    /// (their `^` must not match after it, as in PCRE).
    pub rx_caret_twins: usize,
    /// `@pm`, `@pmf` and `@pmFromFile` automata.
    pub pm: usize,
}

impl Ruleset {
    /// Every rule link, chain links included, in file order.
    pub fn links(&self) -> impl Iterator<Item = &Rule> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Rule(r) => Some(&**r),
                Entry::Marker(_) => None,
            })
            .flat_map(Rule::links)
    }

    /// The rule with this id.
    pub fn rule(&self, id: u64) -> Option<&Rule> {
        self.entries.iter().find_map(|e| match e {
            Entry::Rule(r) if r.id == Some(id) => Some(&**r),
            _ => None,
        })
    }
}

/// Loads rule files in order (as ModSecurity reads `Include`d files: `crs-setup.conf` first,
/// then `rules/*.conf` sorted), following `Include` and `IncludeOptional` (globs in the file
/// name). `@pmFromFile` data files are found beside the rule file.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Ruleset, Vec<LoadError>> {
    let mut builder = rules::Builder::default();
    for path in paths {
        files::load_file(&mut builder, path.as_ref(), 0);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    let mut set = Ruleset {
        entries: builder.entries,
        default_actions: builder.defaults,
        settings: builder.settings,
        warnings: Vec::new(),
        stats: Stats {
            directives: builder.directives,
            ..Stats::default()
        },
    };
    count(&mut set);
    Ok(set)
}

/// Fills in the counts and the warnings.
fn count(set: &mut Ruleset) {
    let mut stats = std::mem::take(&mut set.stats);
    let mut warnings = Vec::new();
    for entry in &set.entries {
        let rule = match entry {
            Entry::Marker(_) => {
                stats.markers += 1;
                continue;
            }
            Entry::Rule(rule) => rule,
        };
        stats.rules += 1;
        for link in rule.links() {
            if link.id.is_none() {
                stats.chained_links += 1;
            }
            let warn = |message: &str| Warning {
                at: link.at.clone(),
                rule_id: rule.id,
                message: message.into(),
            };
            match &link.operator {
                Operator::Rx(pattern, engine) => {
                    match engine {
                        RegexEngine::Regex => stats.rx_regex += 1,
                        RegexEngine::Translated => stats.rx_translated += 1,
                        RegexEngine::Backtracking => stats.rx_backtracking += 1,
                    }
                    if matches!(pattern, operator::Pattern::Bytes(_, Some(_))) {
                        stats.rx_caret_twins += 1;
                    }
                }
                Operator::RxMacro(_) => stats.rx_macro += 1,
                Operator::Pm(_) => stats.pm += 1,
                Operator::Rbl(_) => {
                    warnings.push(warn("@rbl never matches: no DNS lookups in this engine"))
                }
                Operator::DetectSqli | Operator::DetectXss => warnings.push(warn(&format!(
                    "@{} never matches: libinjection is not in this build yet",
                    link.operator_name
                ))),
                Operator::GeoLookup => warnings.push(warn(
                    "@geoLookup never matches: no GeoIP database in this engine",
                )),
                _ => {}
            }
        }
    }
    set.stats = stats;
    set.warnings = warnings;
}
