//! Reading rule files into the [`Builder`]: each file lexed and its directives applied in
//! order, `Include` and `IncludeOptional` followed where they stand (so Debian's
//! `owasp-crs.load`, which includes `crs-setup.conf` and `rules/*.conf`, loads as Apache would
//! load it). A relative include is relative to the including file's directory; the last path
//! component may hold `*` and `?` wildcards, matched files are read in sorted order.
//! `Include` of nothing is an error, `IncludeOptional` of nothing is not.

use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, LoadError, Location};
use crate::parse::{self, RawDirective};
use crate::rules::Builder;

/// How deep includes may nest (a loop of includes ends here with an error).
const MAX_DEPTH: usize = 16;

/// Reads `path` and applies its directives (and those of the files it includes).
pub(crate) fn load_file(builder: &mut Builder, path: &Path, depth: usize) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let at = Location {
                file: path.into(),
                line: 0,
            };
            builder
                .errors
                .push(LoadError::new(at, "", ErrorKind::Io(e.to_string())));
            return;
        }
    };
    // A byte-order mark is not part of the first directive's name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let directives = match parse::lex(path, text) {
        Ok(directives) => directives,
        Err(errors) => {
            builder.errors.extend(errors);
            return;
        }
    };
    for d in &directives {
        let optional = d.name.eq_ignore_ascii_case("IncludeOptional");
        if !optional && !d.name.eq_ignore_ascii_case("Include") {
            builder.directive(d, dir);
            continue;
        }
        // A chain may not run into another file.
        builder.end_of_file();
        match included(d, dir, optional, depth) {
            Ok(files) => {
                for file in files {
                    load_file(builder, &file, depth + 1);
                }
            }
            Err(kind) => builder.errors.push(d.error(kind)),
        }
    }
    builder.end_of_file();
}

/// The files an `Include` directive names.
fn included(
    d: &RawDirective,
    dir: &Path,
    optional: bool,
    depth: usize,
) -> Result<Vec<PathBuf>, ErrorKind> {
    let [pattern] = d.args.as_slice() else {
        return Err(ErrorKind::Syntax("one path expected".into()));
    };
    if depth >= MAX_DEPTH {
        return Err(ErrorKind::Syntax(format!(
            "includes nest deeper than {MAX_DEPTH}"
        )));
    }
    let pattern = dir.join(pattern);
    let name = pattern.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let files = if name.contains(['*', '?']) {
        let parent = pattern.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = std::fs::read_dir(parent)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| wildcard(name.as_bytes(), n.as_bytes()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    } else if pattern.exists() {
        vec![pattern.clone()]
    } else {
        Vec::new()
    };
    if files.is_empty() && !optional {
        let message = format!("{} matches no file", pattern.display());
        return Err(ErrorKind::BadValue {
            name: d.name.clone(),
            message,
        });
    }
    Ok(files)
}

/// Shell-style `*` and `?` on one file name.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], name) || (!name.is_empty() && wildcard(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"REQUEST-901-INITIALIZATION.conf"));
        assert!(!wildcard(b"*.conf", b"crs-setup.conf.example"));
        assert!(wildcard(
            b"REQUEST-9??-*.conf",
            b"REQUEST-920-PROTOCOL-ENFORCEMENT.conf"
        ));
        assert!(wildcard(b"a*b*c", b"abbbc") && !wildcard(b"a?c", b"ac"));
    }
}
