//! The rule model and its compilation from directives: `SecRule` and `SecAction` become
//! [`Rule`]s (a chain is a rule holding the next one), `SecMarker` a marker, and the
//! directives that change earlier rules (`SecRuleRemoveById`, `SecRuleUpdateTargetById`, ...)
//! are applied when they are read, to the rules loaded before them, as ModSecurity documents
//! ("must be placed after the rule"). Every name is checked here.

use crate::actions::{self, Action};
use crate::error::{ErrorKind, LoadError, Location};
use crate::names;
use crate::operator::{self, Operator};
use crate::parse::{self, RawDirective, Selector};
use crate::transform::Transformation;

/// A variable of a rule, with its selector compiled.
#[derive(Debug, Clone)]
pub struct Target {
    /// The collection (`ARGS`), upper-case.
    pub name: String,
    /// Which keys: none (all), one key, or the keys a regex matches.
    pub selector: Option<KeySelector>,
    /// `&ARGS`: the count of elements.
    pub count: bool,
    /// `!ARGS:x`: taken out of the list.
    pub exclude: bool,
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub enum KeySelector {
    /// One key, compared case-insensitively.
    Key(String),
    /// Keys matching a regex (case-insensitive, as ModSecurity compares collection keys).
    Regex(regex::Regex),
}

/// One rule (one link of a chain).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where the `SecRule` or `SecAction` starts.
    pub at: Location,
    /// The rule's id; `None` for the links after a chain's first.
    pub id: Option<u64>,
    /// The phase (1 request headers, 2 request body, 3 response headers, 4 response body,
    /// 5 logging); links after the first have their chain's.
    pub phase: u8,
    /// The variables; empty for `SecAction`.
    pub targets: Vec<Target>,
    /// `!@rx`: the rule matches when the operator does not.
    pub negated: bool,
    /// The operator's name as written, without `@`.
    pub operator_name: String,
    /// The operator's argument as written (the PCRE pattern of an `@rx`), for logs.
    pub operator_argument: String,
    /// The compiled operator.
    pub operator: Operator,
    /// The transformations to apply, the phase's `SecDefaultAction` ones first unless a
    /// `t:none` cleared them.
    pub transformations: Vec<Transformation>,
    /// The other actions, in file order.
    pub actions: Vec<Action>,
    /// The next link of the chain, if this rule has `chain`.
    pub chained: Option<Box<Rule>>,
}

impl Rule {
    /// The values of every action named `name` (`tag`).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.actions
            .iter()
            .filter(move |a| a.name == name)
            .filter_map(|a| a.value.as_deref())
    }

    /// This rule and the links chained to it.
    pub fn links(&self) -> impl Iterator<Item = &Rule> {
        std::iter::successors(Some(self), |r| r.chained.as_deref())
    }

    fn last_link_mut(&mut self) -> &mut Rule {
        match self.chained {
            Some(ref mut next) => next.last_link_mut(),
            None => self,
        }
    }
}

/// One entry of the rule list, in file order.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A rule (with its chain).
    Rule(Box<Rule>),
    /// `SecMarker NAME`, where `skipAfter:NAME` resumes.
    Marker(String),
}

/// A configuration directive kept for the engine or the proxy (see [`crate::names::SETTINGS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Where it is.
    pub at: Location,
    /// The directive's name (`SecRuleEngine`).
    pub name: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Builds the rule list directive by directive.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    pub entries: Vec<Entry>,
    pub defaults: [Vec<Action>; 5],
    default_transformations: [Vec<Transformation>; 5],
    pub settings: Vec<Setting>,
    pub errors: Vec<LoadError>,
    pub directives: usize,
    /// A chain whose last link has `chain`: the next `SecRule` joins it.
    open_chain: Option<Rule>,
}

impl Builder {
    /// Reads one directive; errors are collected, not returned, so every one is reported.
    pub fn directive(&mut self, d: &RawDirective, dir: &std::path::Path) {
        self.directives += 1;
        if d.name != "SecRule"
            && let Some(open) = self.open_chain.take()
        {
            self.errors.push(LoadError::new(
                open.at.clone(),
                "SecRule",
                ErrorKind::DanglingChain,
            ));
        }
        if let Err(kind) = self.apply(d, dir) {
            self.errors.push(d.error(kind));
        }
    }

    /// The end of a file: a chain may not continue into the next file.
    pub fn end_of_file(&mut self) {
        if let Some(open) = self.open_chain.take() {
            self.errors.push(LoadError::new(
                open.at.clone(),
                "SecRule",
                ErrorKind::DanglingChain,
            ));
        }
    }

    fn apply(&mut self, d: &RawDirective, dir: &std::path::Path) -> Result<(), ErrorKind> {
        let args = |range: std::ops::RangeInclusive<usize>| -> Result<(), ErrorKind> {
            if range.contains(&d.args.len()) {
                return Ok(());
            }
            let (lo, hi) = (range.start(), range.end());
            let want = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo} to {hi}")
            };
            Err(ErrorKind::Syntax(format!(
                "{want} arguments expected, {} found",
                d.args.len()
            )))
        };
        let directive =
            names::find(DIRECTIVES, &d.name).or_else(|| names::find(names::SETTINGS, &d.name));
        match directive.ok_or(ErrorKind::UnknownDirective)? {
            "SecRule" => {
                args(2..=3)?;
                self.rule(d, Some((&d.args[0], &d.args[1])), d.args.get(2), dir)
            }
            "SecAction" => {
                args(1..=1)?;
                self.rule(d, None, d.args.first(), dir)
            }
            "SecMarker" => {
                args(1..=1)?;
                self.entries.push(Entry::Marker(d.args[0].clone()));
                Ok(())
            }
            "SecDefaultAction" => {
                args(1..=1)?;
                self.default_action(&d.args[0])
            }
            "SecRuleRemoveById" => {
                args(1..=usize::MAX)?;
                let ranges = id_ranges(&d.args)?;
                self.remove(|r| in_ranges(r, &ranges));
                Ok(())
            }
            "SecRuleRemoveByTag" => {
                args(1..=1)?;
                self.remove(|r| r.values("tag").any(|t| t == d.args[0]));
                Ok(())
            }
            "SecRuleRemoveByMsg" => {
                args(1..=1)?;
                self.remove(|r| r.values("msg").any(|m| m == d.args[0]));
                Ok(())
            }
            which @ ("SecRuleUpdateTargetById"
            | "SecRuleUpdateTargetByTag"
            | "SecRuleUpdateTargetByMsg") => {
                if d.args.len() == 3 {
                    let message = "replacing a target (a third argument) is not supported";
                    return Err(ErrorKind::Syntax(message.into()));
                }
                args(2..=2)?;
                let targets = targets(&d.args[1])?;
                let key = d.args[0].as_str();
                let ranges = if which.ends_with("ById") {
                    id_ranges(&d.args[..1])?
                } else {
                    Vec::new()
                };
                let chosen = |r: &Rule| match which {
                    "SecRuleUpdateTargetById" => in_ranges(r, &ranges),
                    "SecRuleUpdateTargetByTag" => r.values("tag").any(|t| t == key),
                    _ => r.values("msg").any(|m| m == key),
                };
                self.update(chosen, |r| r.targets.extend(targets.iter().cloned()));
                Ok(())
            }
            "SecRuleUpdateActionById" => {
                args(2..=2)?;
                let id = actions::id(&d.args[0]).ok_or(ErrorKind::BadValue {
                    name: d.name.clone(),
                    message: "an id expected".into(),
                })?;
                let checked =
                    actions::check(&parse::parse_actions(&d.args[1]).map_err(ErrorKind::Syntax)?)?;
                if checked.has("id") || checked.has("phase") || checked.has("chain") {
                    return Err(ErrorKind::BadValue {
                        name: d.name.clone(),
                        message: "id, phase and chain cannot be updated".into(),
                    });
                }
                self.update(|r| r.id == Some(id), |r| update_actions(r, &checked));
                Ok(())
            }
            setting => {
                self.settings.push(Setting {
                    at: d.at.clone(),
                    name: setting,
                    args: d.args.clone(),
                });
                Ok(())
            }
        }
    }

    fn default_action(&mut self, text: &str) -> Result<(), ErrorKind> {
        let checked = actions::check(&parse::parse_actions(text).map_err(ErrorKind::Syntax)?)?;
        let bad = |message: &str| ErrorKind::BadValue {
            name: "SecDefaultAction".into(),
            message: message.into(),
        };
        let phase = checked
            .value("phase")
            .and_then(actions::phase)
            .ok_or_else(|| bad("a phase is required"))?;
        if checked.has("id") || checked.has("chain") || checked.has("skipAfter") {
            return Err(bad("id, chain and skipAfter belong to rules"));
        }
        let index = usize::from(phase - 1);
        self.default_transformations[index] =
            resolve_transformations(&[], &checked.transformations);
        self.defaults[index] = checked.actions;
        Ok(())
    }

    /// A `SecRule` (`rule` is its variables and operator) or a `SecAction` (`rule` is None).
    fn rule(
        &mut self,
        d: &RawDirective,
        rule: Option<(&String, &String)>,
        actions_text: Option<&String>,
        dir: &std::path::Path,
    ) -> Result<(), ErrorKind> {
        let specs = match actions_text {
            Some(text) => parse::parse_actions(text).map_err(ErrorKind::Syntax)?,
            None => Vec::new(),
        };
        let checked = actions::check(&specs)?;
        let is_link = self.open_chain.is_some() && rule.is_some();
        let id = checked.value("id").and_then(actions::id);
        if is_link && (id.is_some() || checked.has("phase")) {
            return Err(ErrorKind::Syntax(
                "a chained rule cannot have an id or a phase".into(),
            ));
        }
        let phase = match &self.open_chain {
            Some(open) if is_link => open.phase,
            _ => checked.value("phase").and_then(actions::phase).unwrap_or(2),
        };
        if !is_link {
            let id = id.ok_or(ErrorKind::Syntax("the rule has no id".into()))?;
            if self.ids().any(|known| known == id) {
                return Err(ErrorKind::Syntax(format!("rule id {id} is already used")));
            }
        }
        let (targets, spec) = match rule {
            Some((variables, op)) => (targets(variables)?, parse::parse_operator(op)),
            None => (Vec::new(), parse::parse_operator("@unconditionalMatch")),
        };
        let operator = operator::compile(&spec.name, &spec.argument, dir)?;
        let inherited = &self.default_transformations[usize::from(phase - 1)];
        let new = Rule {
            at: d.at.clone(),
            id: if is_link { None } else { id },
            phase,
            targets,
            negated: spec.negated,
            operator_name: spec.name,
            operator_argument: spec.argument,
            operator,
            transformations: resolve_transformations(inherited, &checked.transformations),
            chained: None,
            actions: checked.actions,
        };
        let continues = new.actions.iter().any(|a| a.name == "chain");
        let head = match self.open_chain.take() {
            Some(mut open) if is_link => {
                open.last_link_mut().chained = Some(Box::new(new));
                open
            }
            _ => new,
        };
        if continues {
            self.open_chain = Some(head);
        } else {
            self.entries.push(Entry::Rule(Box::new(head)));
        }
        Ok(())
    }

    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        let open = self.open_chain.as_ref().and_then(|r| r.id);
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Rule(r) => r.id,
                Entry::Marker(_) => None,
            })
            .chain(open)
    }

    fn remove(&mut self, mut which: impl FnMut(&Rule) -> bool) {
        self.entries
            .retain(|e| !matches!(e, Entry::Rule(r) if which(r)));
    }

    fn update(&mut self, which: impl Fn(&Rule) -> bool, mut change: impl FnMut(&mut Rule)) {
        for entry in &mut self.entries {
            if let Entry::Rule(r) = entry
                && which(r)
            {
                change(r);
            }
        }
    }
}

/// Directives that add or change rules (the others are [`names::SETTINGS`]).
const DIRECTIVES: &[&str] = &[
    "SecRule",
    "SecAction",
    "SecMarker",
    "SecDefaultAction",
    "SecRuleRemoveById",
    "SecRuleRemoveByTag",
    "SecRuleRemoveByMsg",
    "SecRuleUpdateTargetById",
    "SecRuleUpdateTargetByTag",
    "SecRuleUpdateTargetByMsg",
    "SecRuleUpdateActionById",
];

/// `t:` lists to the transformations run: `t:none` clears what came before, inherited ones
/// included.
fn resolve_transformations(
    inherited: &[Transformation],
    listed: &[Option<Transformation>],
) -> Vec<Transformation> {
    let mut out = inherited.to_vec();
    for t in listed {
        match t {
            Some(t) => out.push(*t),
            None => out.clear(),
        }
    }
    out
}

/// `SecRuleUpdateActionById`: `t:` extends the list (`t:none` clears it), `tag`, `setvar` and
/// `ctl` are added, any other action replaces the rule's action of the same name.
fn update_actions(rule: &mut Rule, update: &actions::Checked) {
    rule.transformations = resolve_transformations(&rule.transformations, &update.transformations);
    for action in &update.actions {
        if !matches!(action.name, "tag" | "setvar" | "ctl") {
            rule.actions.retain(|a| a.name != action.name);
        }
        rule.actions.push(action.clone());
    }
}

fn in_ranges(rule: &Rule, ranges: &[(u64, u64)]) -> bool {
    rule.id
        .is_some_and(|id| ranges.iter().any(|(a, b)| (*a..=*b).contains(&id)))
}

/// `SecRuleRemoveById 920100 920200-920299 "942100 942110"`.
fn id_ranges(args: &[String]) -> Result<Vec<(u64, u64)>, ErrorKind> {
    let mut out = Vec::new();
    for word in args
        .iter()
        .flat_map(|a| a.split([' ', ',']))
        .filter(|w| !w.is_empty())
    {
        let (a, b) = word.split_once('-').unwrap_or((word, word));
        match (actions::id(a), actions::id(b)) {
            (Some(a), Some(b)) if a <= b => out.push((a, b)),
            _ => {
                return Err(ErrorKind::BadValue {
                    name: "id".into(),
                    message: format!("`{word}` is not an id or a range"),
                });
            }
        }
    }
    Ok(out)
}

/// A variable list, every name checked and every selector regex compiled.
fn targets(text: &str) -> Result<Vec<Target>, ErrorKind> {
    let variables = parse::parse_variables(text).map_err(ErrorKind::Syntax)?;
    variables
        .into_iter()
        .map(|v| {
            let name = names::find(names::VARIABLES, &v.name)
                .ok_or(ErrorKind::UnknownVariable(v.name.clone()))?;
            let selector = match v.selector {
                None => None,
                Some(Selector::Key(key)) => Some(KeySelector::Key(key)),
                Some(Selector::Regex(pattern)) => {
                    let translated = crate::pcre::translate(&pattern);
                    let re = regex::RegexBuilder::new(&translated.pattern)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| ErrorKind::Regex {
                            message: format!("selector /{pattern}/: {e}"),
                        })?;
                    Some(KeySelector::Regex(re))
                }
            };
            Ok(Target {
                name: name.to_string(),
                selector,
                count: v.count,
                exclude: v.exclude,
            })
        })
        .collect()
}
