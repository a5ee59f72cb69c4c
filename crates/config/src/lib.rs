//! gatehouse's configuration: `config.toml -> raw (serde, spans) -> validate -> model::Config`.
//!
//! This crate is the only place that knows the file format. It reports EVERY error it finds, each
//! with file:line:col and the key path, instead of stopping at the first.
#![deny(missing_docs)]

pub mod locate;
pub mod model;
pub mod raw;
pub mod units;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::Config;

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// Key path, e.g. `upstreams.app.servers[1].weight`; empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.col, self.path, self.message
            )
        }
    }
}

/// Every error of one file, printable one per line.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Validates config text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(text, file).map_err(ConfigErrors)
}

/// The JSON Schema of the file format, for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::RawConfig);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests;
