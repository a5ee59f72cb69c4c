//! PCRE pattern text to `regex` crate syntax, with PCRE's meaning kept. ModSecurity hands
//! `@rx` to PCRE (8-bit, no UTF, DOTALL + MULTILINE); the `regex` crate refuses or reads
//! differently a few things PCRE accepts:
//! - a `{` that does not start a quantifier is a literal to PCRE (`\{` here);
//! - inside a class, `[` is a literal unless it opens `[:alpha:]`, and `&&`, `--`, `~~` are
//!   literals (set operations to `regex`);
//! - `\<` and `\>` are literal `<` and `>` (word boundaries to `regex`);
//! - `\v` is vertical whitespace `[\n\x0B\f\r\x85]` and `\h` horizontal `[\t \xA0]` (one
//!   character and an error to `regex`), `\b` in a class is backspace, `\e` is escape,
//!   `\0nn` is octal;
//! - `(?#...)` is a comment;
//! - a non-ASCII character is its UTF-8 bytes, each a character of its own (CRS 942420's
//!   class `[´’‘]` holds the bytes C2 B4 E2 80 99 98; `regex` refuses it without Unicode).
//!
//! One difference no `regex` syntax expresses: in MULTILINE mode PCRE's `^` does not match
//! after a newline that ends the subject, the `regex` crate's does (`^$` matches `"x\n"`).
//! [`Translated::carets`] finds each `^` so that [`crate::operator`] can also compile the
//! pattern with [`EXACT_CARET`] for `fancy-regex`, used only on values ending in `\n`.
//!
//! What has no `regex` equivalent (lookaround, backreferences, atomic groups, possessive
//! quantifiers, `\G`, `\K`, `\Z`) is reported so the caller uses `fancy-regex` instead.

/// A pattern rewritten for the `regex` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The pattern in `regex` syntax (when `backtracking` is empty) or `fancy-regex` syntax.
    pub pattern: String,
    /// Whether anything was rewritten.
    pub changed: bool,
    /// The PCRE features that only a backtracking engine has, if any (`"lookaround"`).
    pub backtracking: Vec<&'static str>,
    /// Byte offsets in `pattern` of each `^` outside a class: MULTILINE `^` differs between
    /// PCRE and `regex` after a final newline (see the module header).
    pub carets: Vec<usize>,
}

/// Rewrites PCRE pattern text; see the module header for what changes.
pub fn translate(pcre: &str) -> Translated {
    let chars: Vec<char> = pcre.chars().collect();
    let mut t = Translator {
        chars: &chars,
        i: 0,
        out: String::with_capacity(pcre.len()),
    };
    let mut backtracking = Vec::new();
    let mut in_class = false;
    // Whether the previous token can carry a quantifier (so that `{2}` is one).
    let mut quantifiable = false;
    // Whether the previous token was a quantifier (so that a `+` after it is possessive).
    let mut after_quantifier = false;
    let mut changed = false;
    let mut carets = Vec::new();
    while let Some(c) = t.peek(0) {
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    t.push(']');
                    quantifiable = true;
                    after_quantifier = false;
                    continue;
                }
                '\\' => changed |= t.class_escape(),
                '[' if t.peek(1) == Some(':') => t.posix_class(),
                '[' => {
                    t.emit("\\[", 1);
                    changed = true;
                }
                '&' | '-' | '~' if t.peek(1) == Some(c) => {
                    t.emit(&format!("\\{c}"), 1);
                    changed = true;
                }
                _ if !c.is_ascii() => changed |= t.bytes_of(c),
                _ => t.push_next(),
            }
            continue;
        }
        let was_quantifier = after_quantifier;
        after_quantifier = false;
        match c {
            '[' => {
                in_class = true;
                t.push_next();
                if t.peek(0) == Some('^') {
                    t.push_next();
                }
                if t.peek(0) == Some(']') {
                    t.emit("\\]", 1);
                    changed = true;
                }
                continue;
            }
            '\\' => {
                let (rewritten, needs) = t.escape();
                changed |= rewritten;
                backtracking.extend(needs);
                quantifiable = true;
            }
            '(' => {
                let (rewritten, needs) = t.group_open();
                changed |= rewritten;
                backtracking.extend(needs);
                quantifiable = false;
            }
            '*' | '+' | '?' if was_quantifier && c == '+' => {
                backtracking.push("possessive quantifier");
                t.push_next();
            }
            '*' | '+' | '?' => {
                t.push_next();
                if t.peek(0) == Some('?') {
                    t.push_next();
                }
                after_quantifier = quantifiable;
                quantifiable = false;
            }
            '{' => match quantifier_len(&chars[t.i..]) {
                Some(len) if quantifiable => {
                    for _ in 0..len {
                        t.push_next();
                    }
                    if t.peek(0) == Some('?') {
                        t.push_next();
                    }
                    after_quantifier = true;
                    quantifiable = false;
                }
                _ => {
                    t.emit("\\{", 1);
                    changed = true;
                    quantifiable = true;
                }
            },
            '}' => {
                t.emit("\\}", 1);
                changed = true;
                quantifiable = true;
            }
            '^' => {
                carets.push(t.out.len());
                t.push_next();
                quantifiable = false;
            }
            ')' | '.' | '$' => {
                t.push_next();
                quantifiable = c != '$';
            }
            _ if !c.is_ascii() => {
                changed |= t.bytes_of(c);
                quantifiable = true;
            }
            _ => {
                t.push_next();
                quantifiable = c != '|';
            }
        }
    }
    backtracking.sort_unstable();
    backtracking.dedup();
    Translated {
        pattern: t.out,
        changed,
        backtracking,
        carets,
    }
}

/// PCRE's MULTILINE `^`: the start of the subject, or after a newline that does not end it.
pub const EXACT_CARET: &str = r"(?:\A|(?<=\n)(?!\z))";

impl Translated {
    /// The pattern with each `^` spelled as [`EXACT_CARET`] (lookaround: for `fancy-regex`).
    pub fn with_exact_caret(&self) -> String {
        let mut out = String::with_capacity(self.pattern.len() + self.carets.len() * 20);
        let mut last = 0;
        for &at in &self.carets {
            out.push_str(&self.pattern[last..at]);
            out.push_str(EXACT_CARET);
            last = at + 1;
        }
        out.push_str(&self.pattern[last..]);
        out
    }
}

/// Length of `{n}`, `{n,}` or `{n,m}` at the start of `s`, if it is one (PCRE reads any
/// other `{` as a literal).
fn quantifier_len(s: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (s.get(i) == Some(&'}')).then_some(i + 1)
}

struct Translator<'a> {
    chars: &'a [char],
    i: usize,
    out: String,
}

impl Translator<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn push(&mut self, c: char) {
        self.out.push(c);
        self.i += 1;
    }

    fn push_next(&mut self) {
        if let Some(c) = self.peek(0) {
            self.push(c);
        }
    }

    /// Writes `text` in place of `consumed` input characters.
    fn emit(&mut self, text: &str, consumed: usize) {
        self.out.push_str(text);
        self.i += consumed;
    }

    /// A non-ASCII character: PCRE without UTF reads its UTF-8 bytes one by one (in a class,
    /// each byte is a member), so it becomes `\xHH` per byte.
    fn bytes_of(&mut self, c: char) -> bool {
        let mut buf = [0; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            self.out.push_str(&format!("\\x{b:02X}"));
        }
        self.i += 1;
        true
    }

    /// `\x` outside a class. Returns (rewritten, backtracking features).
    fn escape(&mut self) -> (bool, Vec<&'static str>) {
        let Some(next) = self.peek(1) else {
            self.push_next();
            return (false, Vec::new());
        };
        match next {
            '<' | '>' => self.emit(&next.to_string(), 2),
            'v' => self.emit(r"[\n\x0B\f\r\x85]", 2),
            'V' => self.emit(r"[^\n\x0B\f\r\x85]", 2),
            'h' => self.emit(r"[\t \xA0]", 2),
            'H' => self.emit(r"[^\t \xA0]", 2),
            'e' => self.emit(r"\x1B", 2),
            '0' => {
                let text = self.octal();
                self.out.push_str(&text);
            }
            'Q' => {
                let end = (self.i + 2..self.chars.len())
                    .find(|&k| self.chars[k] == '\\' && self.chars.get(k + 1) == Some(&'E'));
                let stop = end.unwrap_or(self.chars.len());
                let literal: String = self.chars[self.i + 2..stop].iter().collect();
                self.out.push_str(&regex::escape(&literal));
                self.i = if end.is_some() { stop + 2 } else { stop };
            }
            '1'..='9' | 'k' | 'g' => {
                self.emit(&format!("\\{next}"), 2);
                return (false, vec!["backreference"]);
            }
            'G' | 'K' | 'Z' | 'R' | 'X' | 'C' => {
                self.emit(&format!("\\{next}"), 2);
                return (false, vec!["PCRE-only escape"]);
            }
            _ => {
                self.emit(&format!("\\{next}"), 2);
                return (false, Vec::new());
            }
        }
        (true, Vec::new())
    }

    /// `\0`, `\01`, `\012`: PCRE octal, as `\xHH`.
    fn octal(&mut self) -> String {
        let mut value = 0u32;
        let mut k = 1;
        while k <= 3 && self.peek(k).is_some_and(|c| ('0'..='7').contains(&c)) {
            value = value * 8 + self.peek(k).and_then(|c| c.to_digit(8)).unwrap_or(0);
            k += 1;
        }
        self.i += k;
        format!("\\x{:02X}", value & 0xFF)
    }

    /// `\x` inside a class. Returns whether it was rewritten.
    fn class_escape(&mut self) -> bool {
        let Some(next) = self.peek(1) else {
            self.push_next();
            return false;
        };
        match next {
            '<' | '>' => self.emit(&next.to_string(), 2),
            'v' => self.emit(r"\n\x0B\f\r\x85", 2),
            'h' => self.emit(r"\t \xA0", 2),
            'b' => self.emit(r"\x08", 2),
            'e' => self.emit(r"\x1B", 2),
            '0' => {
                let text = self.octal();
                self.out.push_str(&text);
            }
            _ => {
                self.emit(&format!("\\{next}"), 2);
                return false;
            }
        }
        true
    }

    /// `[:alpha:]` inside a class, copied through.
    fn posix_class(&mut self) {
        let end = (self.i + 2..self.chars.len().saturating_sub(1))
            .find(|&k| self.chars[k] == ':' && self.chars[k + 1] == ']');
        match end {
            Some(k) => {
                while self.i < k + 2 {
                    self.push_next();
                }
            }
            None => self.emit("\\[", 1),
        }
    }

    /// `(`, `(?:`, `(?i:`, `(?=`, `(?#...)`. Returns (rewritten, backtracking features).
    fn group_open(&mut self) -> (bool, Vec<&'static str>) {
        if self.peek(1) != Some('?') {
            self.push_next();
            return (false, Vec::new());
        }
        let feature = match (self.peek(2), self.peek(3)) {
            (Some('#'), _) => {
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == ')' {
                        break;
                    }
                }
                return (true, Vec::new());
            }
            (Some('=' | '!'), _) | (Some('<'), Some('=' | '!')) => Some("lookaround"),
            (Some('>'), _) => Some("atomic group"),
            (Some('|'), _) => Some("branch reset"),
            _ => None,
        };
        self.push_next();
        (false, feature.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles the translation as ModSecurity's PCRE would run it: DOTALL + MULTILINE, bytes.
    fn compiled(pcre: &str) -> regex::bytes::Regex {
        let t = translate(pcre);
        assert!(t.backtracking.is_empty(), "{pcre}: {:?}", t.backtracking);
        regex::bytes::RegexBuilder::new(&t.pattern)
            .dot_matches_new_line(true)
            .multi_line(true)
            .unicode(false)
            .build()
            .unwrap_or_else(|e| panic!("{pcre} -> {}: {e}", t.pattern))
    }

    #[test]
    fn plain_patterns_are_unchanged() {
        for p in [
            r"^\d+$",
            r"(?i:foo|bar){2,3}x",
            r"[a-z\]\-]+",
            r"a{3}",
            r"[[:alpha:]]+",
        ] {
            let t = translate(p);
            assert_eq!((t.pattern.as_str(), t.changed), (p, false), "{p}");
        }
    }

    #[test]
    fn literal_braces() {
        // 933170: PCRE reads `{.*}` as a literal brace, `.*`, a literal brace.
        let r = compiled(r#"[oOcC]:\d+:".+?":\d+:{.*}"#);
        assert!(r.is_match(br#"O:8:"stdClass":1:{s:1:"a";}"#));
        assert!(!r.is_match(br#"O:8:"stdClass":1:s"#));
        let r = compiled(r"{{.*?}}");
        assert!(r.is_match(b"x {{7*7}} y"));
        let r = compiled(r"\${|x{2}");
        assert!(r.is_match(b"${a") && r.is_match(b"xx") && !r.is_match(b"x{"));
        assert_eq!(translate("a{,2}").pattern, r"a\{,2\}");
    }

    #[test]
    fn class_brackets_and_set_operators_are_literals() {
        // 942380: `[\'\" ?[=<>]+` is one class holding `'`, `"`, space, `?`, `[`, `=`, `<`, `>`.
        let r = compiled(r#"having\b ?[\'\" ?[=<>]+"#);
        assert!(r.is_match(b"having ["));
        assert!(r.is_match(b"having '='"));
        let r = compiled(r"^[a&&b]$");
        assert!(r.is_match(b"&") && r.is_match(b"a"));
        let r = compiled(r"^[a--]$");
        assert!(r.is_match(b"-"));
    }

    #[test]
    fn angle_escapes_are_literals() {
        // 921200: `\<\>` are the characters, not word boundaries.
        let r = compiled(r"^[^\<\>]*\<x\>$");
        assert!(r.is_match(b"ab<x>"));
        assert!(!r.is_match(b"x"));
    }

    #[test]
    fn vertical_and_horizontal_whitespace() {
        // 942440: `--[\s\r\n\v\f]`; PCRE's \v in a class is \n \x0B \f \r \x85.
        let r = compiled(r"--[\v]");
        for b in [b'\n', 0x0B, 0x0C, b'\r', 0x85] {
            assert!(r.is_match(&[b'-', b'-', b]), "{b:#x}");
        }
        assert!(!r.is_match(b"-- "));
        let r = compiled(r"a\hb\vc");
        assert!(r.is_match(b"a\tb\nc") && r.is_match(b"a\xA0b\x0Bc"));
        assert!(!r.is_match(b"a\nb\nc"));
    }

    #[test]
    fn non_ascii_characters_are_their_bytes() {
        // 942420: PCRE without UTF reads `[’]` as the class of bytes E2, 80, 99.
        let r = compiled("^[’]$");
        assert!(r.is_match(b"\xE2") && r.is_match(b"\x99") && !r.is_match("’".as_bytes()));
        let r = compiled("^’+$");
        assert!(r.is_match(b"\xE2\x80\x99\x99") && !r.is_match(b"\xE2"));
    }

    #[test]
    fn octal_escape_comment_and_backspace() {
        let r = compiled(r"a\012(?#why)b[\b]\e");
        assert!(r.is_match(b"a\nb\x08\x1B"));
        let r = compiled(r"\Qa.b\E+");
        assert!(r.is_match(b"a.bb") && !r.is_match(b"axb"));
    }

    #[test]
    fn exact_caret_spelling() {
        let t = translate(r"(?:^|=)[^a]^x\^");
        assert_eq!(t.carets.len(), 2);
        assert_eq!(
            t.with_exact_caret(),
            format!(r"(?:{EXACT_CARET}|=)[^a]{EXACT_CARET}x\^")
        );
        let caret = |text: &str| {
            fancy_regex::RegexBuilder::new(&format!("(?sm){}", translate(text).with_exact_caret()))
                .bytes_mode(fancy_regex::BytesMode::Ascii)
                .build()
                .expect("compiles")
        };
        // PCRE: `^$` does not match "x\n" (no `^` after the final newline), matches "\n".
        assert!(!caret("^$").is_match(b"x\n".as_slice()).expect("runs"));
        assert!(caret("^$").is_match(b"\n".as_slice()).expect("runs"));
        assert!(caret("^b").is_match(b"a\nb".as_slice()).expect("runs"));
        assert!(
            compiled("^$").is_match(b"x\n"),
            "the `regex` crate differs here"
        );
    }

    #[test]
    fn backtracking_features_are_reported() {
        assert_eq!(translate(r"<\?(?!xml)").backtracking, vec!["lookaround"]);
        assert_eq!(translate(r"(?<!&amp);").backtracking, vec!["lookaround"]);
        assert_eq!(
            translate(r"\b(\w+)\b=\b\1\b").backtracking,
            vec!["backreference"]
        );
        assert_eq!(
            translate(r"\s*+;").backtracking,
            vec!["possessive quantifier"]
        );
        assert_eq!(
            translate(r"[^a]++").backtracking,
            vec!["possessive quantifier"]
        );
        assert!(translate(r"a+b").backtracking.is_empty());
        assert!(translate(r"(?<name>a)").backtracking.is_empty());
    }
}
