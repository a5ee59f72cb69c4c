//! The transformations that rewrite text rather than decode it: command-line and whitespace
//! normalisation, comments, paths, and UTF-8 to `%u` notation.

use super::is_c_space;

/// `cmdLine`, as the manual lists it: delete `\ " ' ^`; delete spaces before `/` and `(`;
/// replace `,` and `;` by a space; replace runs of whitespace by one space; lowercase.
pub fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &c in input {
        match c {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(c);
            }
            _ => {
                out.push(c.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

pub fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &c in input {
        if is_c_space(c) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `replaceComments`: each C comment, terminated or not, becomes one space; a lone `*/` stays.
pub fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if !input[i..].starts_with(b"/*") {
            out.push(input[i]);
            i += 1;
            continue;
        }
        out.push(b' ');
        i = memchr::memmem::find(&input[i + 2..], b"*/").map_or(input.len(), |p| i + 2 + p + 2);
    }
    out
}

/// `removeComments`, as ModSecurity v3 does it: `/*` and `<!--` open a comment that either
/// `*/` or `-->` closes (and the byte right after the closer is kept whatever it is, a NUL
/// when the value ends there); `--` or `#` outside a comment ends the value; a comment still
/// open at the end leaves one space.
pub fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let (mut i, mut in_comment) = (0, false);
    while i < input.len() {
        let rest = &input[i..];
        if !in_comment {
            if rest.starts_with(b"/*") || rest.starts_with(b"<!--") {
                in_comment = true;
                i += if rest[0] == b'/' { 2 } else { 4 };
            } else if rest.starts_with(b"--") || rest[0] == b'#' {
                break;
            } else {
                out.push(rest[0]);
                i += 1;
            }
        } else if rest.starts_with(b"*/") || rest.starts_with(b"-->") {
            in_comment = false;
            i += if rest[0] == b'*' { 2 } else { 3 };
            out.push(input.get(i).copied().unwrap_or(0));
            i += 1;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

pub fn remove_comment_chars(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        let skip = [&b"<!--"[..], b"-->", b"/*", b"*/", b"--", b"#"]
            .iter()
            .find(|m| rest.starts_with(m))
            .map(|m| m.len());
        match skip {
            Some(n) => i += n,
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// `normalisePath`: repeated slashes collapsed, `.` segments removed, `..` removes the segment
/// before it (and is dropped at the root of an absolute path, kept at the start of a relative
/// one); a trailing slash is kept only where the input ends with one. Segment by segment:
/// ModSecurity's byte-level version may differ on relative paths climbing above their start.
pub fn normalise_path(input: &[u8]) -> Vec<u8> {
    if input.is_empty() {
        return Vec::new();
    }
    let absolute = input[0] == b'/';
    // As in ModSecurity, only a path that ends with `/` keeps a trailing slash.
    let trailing = input.len() > 1 && input.ends_with(b"/");
    let mut parts: Vec<&[u8]> = Vec::new();
    for segment in input.split(|&c| c == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(last) if *last != b".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(segment),
            },
            _ => parts.push(segment),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    out.extend(parts.join(&b'/'));
    if trailing && !parts.is_empty() {
        out.push(b'/');
    }
    out
}

/// `utf8toUnicode`, as ModSecurity v3 does it: a lead byte with its continuation bytes
/// becomes `%u` and the code point in lowercase hex (at least four digits), followed by the
/// lead byte again when the sequence is overlong or a surrogate (so `C0 AF` is `%u002f\xC0`);
/// a lead byte whose continuation bytes are missing is dropped; other bytes above 0x7F are
/// kept; NUL bytes are dropped.
pub fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        let (len, min) = match c {
            0 => {
                i += 1;
                continue;
            }
            0x01..=0x7F => {
                out.push(c);
                i += 1;
                continue;
            }
            0xC0..=0xDF => (2, 0x80),
            0xE0..=0xEF => (3, 0x800),
            0xF0..=0xF7 => (4, 0x10000),
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        };
        if c >= 0xF5 {
            out.push(c);
        }
        let tail = input.get(i + 1..i + len);
        if !tail.is_some_and(|t| t.iter().all(|b| b & 0xC0 == 0x80)) {
            i += 1;
            continue;
        }
        let lead = u32::from(c) & (0x7F >> len);
        let d = input[i + 1..i + len]
            .iter()
            .fold(lead, |d, b| (d << 6) | u32::from(b & 0x3F));
        out.extend(format!("%u{d:04x}").into_bytes());
        if (0xD800..=0xDFFF).contains(&d) {
            out.push(c);
        }
        if d < min {
            out.push(c);
        }
        i += len;
    }
    out
}
