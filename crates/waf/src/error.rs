//! Load errors and warnings: each names the file, the line where the directive starts, and
//! the directive, so `gatehouse check` can print them all at once.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where a directive starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The rule file, as it was given to [`crate::load`].
    pub file: Arc<Path>,
    /// 1-based line of the directive's first line.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// What went wrong with a directive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// Quotes, separators or argument counts that SecLang does not allow.
    #[error("syntax: {0}")]
    Syntax(String),
    /// A directive this engine does not know.
    #[error("unknown directive")]
    UnknownDirective,
    /// A variable (collection) this engine does not know.
    #[error("unsupported variable `{0}`")]
    UnknownVariable(String),
    /// An operator this engine does not know.
    #[error("unsupported operator `@{0}`")]
    UnknownOperator(String),
    /// A transformation this engine does not know.
    #[error("unsupported transformation `t:{0}`")]
    UnknownTransformation(String),
    /// An action this engine does not know (or a `ctl:` option it does not know).
    #[error("unsupported action `{0}`")]
    UnknownAction(String),
    /// A known action, operator or directive with a value it cannot take.
    #[error("bad value for `{name}`: {message}")]
    BadValue {
        /// The action, operator or directive.
        name: String,
        /// Why the value is refused.
        message: String,
    },
    /// An `@rx` (or a selector regex) that neither `regex` nor `fancy-regex` compiles.
    #[error("regex does not compile: {message}")]
    Regex {
        /// The engines' error text.
        message: String,
    },
    /// A chain that the file ends in the middle of.
    #[error("the rule ends a chain: no rule follows it")]
    DanglingChain,
}

/// One directive that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// Where the directive starts.
    pub at: Location,
    /// The directive's name (`SecRule`).
    pub directive: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for LoadError {
    /// `file:line: Directive: what`, or `file: what` for a file that could not be read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.line == 0 {
            return write!(f, "{}: {}", self.at.file.display(), self.kind);
        }
        write!(f, "{}: {}: {}", self.at, self.directive, self.kind)
    }
}

impl LoadError {
    /// An error of `kind` at the directive `directive` found at `at`.
    pub fn new(at: Location, directive: &str, kind: ErrorKind) -> LoadError {
        LoadError {
            at,
            directive: directive.to_string(),
            kind,
        }
    }
}

/// Something a rule file asks for that loads but will not act as written (such as `@rbl`,
/// which never matches here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the rule starts.
    pub at: Location,
    /// The rule's id, if it has one (a chained rule reports its chain's id).
    pub rule_id: Option<u64>,
    /// What the rule will not do.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule_id {
            Some(id) => write!(f, "{}: rule {id}: {}", self.at, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}
