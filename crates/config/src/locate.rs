//! Maps between key paths (`upstreams.app.servers[1]`) and places in the text (line:col), over the
//! spanned tree that toml's parser gives. Deserialization errors come with a span and need a path;
//! validation errors come with a path and need a span.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A key path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path with a key appended.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        KeyPath(v)
    }
    /// This path with an index appended.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) => {
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    let k = if bare { k.clone() } else { format!("{k:?}") };
                    if i > 0 {
                        write!(f, ".")?;
                    }
                    write!(f, "{k}")?;
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The span of the value at `path`, or of its deepest existing ancestor.
pub fn span_of(root: &Spanned<DeValue<'_>>, path: &KeyPath) -> Range<usize> {
    let mut cur = root;
    for seg in &path.0 {
        let next = match (seg, cur.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(_, v)| v),
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    cur.span()
}

/// The path of the deepest value whose span holds `offset` (keys count as part of their value).
pub fn path_at(root: &Spanned<DeValue<'_>>, offset: usize) -> KeyPath {
    fn walk(
        v: &Spanned<DeValue<'_>>,
        offset: usize,
        path: &mut Vec<Seg>,
        best: &mut (usize, Vec<Seg>),
    ) {
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, child) in t.iter() {
                    path.push(Seg::Key(k.get_ref().to_string()));
                    for span in [k.span(), child.span()] {
                        if span.start <= offset && offset < span.end.max(span.start + 1) {
                            let len = span.end - span.start;
                            if len <= best.0 {
                                *best = (len, path.clone());
                            }
                        }
                    }
                    walk(child, offset, path, best);
                    path.pop();
                }
            }
            DeValue::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    let span = child.span();
                    if span.start <= offset && offset < span.end.max(span.start + 1) {
                        let len = span.end - span.start;
                        if len <= best.0 {
                            *best = (len, path.clone());
                        }
                    }
                    walk(child, offset, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = (usize::MAX, Vec::new());
    walk(root, offset, &mut Vec::new(), &mut best);
    KeyPath(best.1)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}
