//! Transformations (`t:`): what a rule does to each value before its operator sees it. Every
//! name CRS 3.3 and 4 use, plus the rest of ModSecurity's list, each following the reference
//! manual's description. Names are matched case-insensitively, as ModSecurity v3's lexer does
//! (CRS writes both `t:base64Decode` and `t:base64decode`, `normalisePath` and `normalizePath`).

mod decode;
mod text;

use md5::Digest as _;

use crate::error::ErrorKind;

/// One transformation. `t:none` is not one: it empties the list a rule inherits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transformation {
    /// `base64Decode`: strict Base64 (anything else gives an empty value).
    Base64Decode,
    /// `base64DecodeExt`: Base64, skipping bytes that are not Base64.
    Base64DecodeExt,
    /// `base64Encode`.
    Base64Encode,
    /// `cmdLine`: the Windows/Unix command-line normalisation (see [`text::cmd_line`]).
    CmdLine,
    /// `compressWhitespace`: each run of whitespace (C's `isspace`) becomes one space.
    CompressWhitespace,
    /// `cssDecode`: CSS 2.1 escapes.
    CssDecode,
    /// `escapeSeqDecode`: ANSI C escapes.
    EscapeSeqDecode,
    /// `hexDecode`: hex pairs to bytes.
    HexDecode,
    /// `hexEncode`: bytes to lowercase hex pairs.
    HexEncode,
    /// `htmlEntityDecode`.
    HtmlEntityDecode,
    /// `jsDecode`: JavaScript escapes.
    JsDecode,
    /// `length`: the value's length in bytes, in decimal.
    Length,
    /// `lowercase`.
    Lowercase,
    /// `md5`: the binary MD5 digest.
    Md5,
    /// `normalisePath` / `normalizePath`: `//`, `/./` and `/../` resolved.
    NormalisePath,
    /// `normalisePathWin` / `normalizePathWin`: `\` read as `/`, then `normalisePath`.
    NormalisePathWin,
    /// `parityEven7bit`.
    ParityEven7bit,
    /// `parityOdd7bit`.
    ParityOdd7bit,
    /// `parityZero7bit`.
    ParityZero7bit,
    /// `removeComments`: `/* */` and `<!-- -->` removed; `--` or `#` ends the value (see
    /// [`text::remove_comments`] for ModSecurity's quirks, kept).
    RemoveComments,
    /// `removeCommentsChar`: the comment markers `/*`, `*/`, `<!--`, `-->`, `--`, `#` removed.
    RemoveCommentsChar,
    /// `removeNulls`.
    RemoveNulls,
    /// `removeWhitespace`.
    RemoveWhitespace,
    /// `replaceComments`: each `/* */` (or unterminated `/*`) becomes one space.
    ReplaceComments,
    /// `replaceNulls`: NUL bytes become spaces.
    ReplaceNulls,
    /// `sha1`: the binary SHA-1 digest.
    Sha1,
    /// `sqlHexDecode`: `0xHHHH` literals to bytes.
    SqlHexDecode,
    /// `trim`.
    Trim,
    /// `trimLeft`.
    TrimLeft,
    /// `trimRight`.
    TrimRight,
    /// `uppercase`.
    Uppercase,
    /// `urlDecode`.
    UrlDecode,
    /// `urlDecodeUni`: `urlDecode` plus `%uHHHH`.
    UrlDecodeUni,
    /// `urlEncode`.
    UrlEncode,
    /// `utf8toUnicode`: multi-byte UTF-8 sequences to `%uHHHH`.
    Utf8ToUnicode,
}

/// What `t:NAME` means: `None` for `t:none`, or a transformation; an unknown name is an error.
pub fn by_name(name: &str) -> Result<Option<Transformation>, ErrorKind> {
    use Transformation as T;
    let t = match name.to_ascii_lowercase().as_str() {
        "none" => return Ok(None),
        "base64decode" => T::Base64Decode,
        "base64decodeext" => T::Base64DecodeExt,
        "base64encode" => T::Base64Encode,
        "cmdline" => T::CmdLine,
        "compresswhitespace" => T::CompressWhitespace,
        "cssdecode" => T::CssDecode,
        "escapeseqdecode" => T::EscapeSeqDecode,
        "hexdecode" => T::HexDecode,
        "hexencode" => T::HexEncode,
        "htmlentitydecode" => T::HtmlEntityDecode,
        "jsdecode" => T::JsDecode,
        "length" => T::Length,
        "lowercase" => T::Lowercase,
        "md5" => T::Md5,
        "normalisepath" | "normalizepath" => T::NormalisePath,
        "normalisepathwin" | "normalizepathwin" => T::NormalisePathWin,
        "parityeven7bit" => T::ParityEven7bit,
        "parityodd7bit" => T::ParityOdd7bit,
        "parityzero7bit" => T::ParityZero7bit,
        "removecomments" => T::RemoveComments,
        "removecommentschar" => T::RemoveCommentsChar,
        "removenulls" => T::RemoveNulls,
        "removewhitespace" => T::RemoveWhitespace,
        "replacecomments" => T::ReplaceComments,
        "replacenulls" => T::ReplaceNulls,
        "sha1" => T::Sha1,
        "sqlhexdecode" => T::SqlHexDecode,
        "trim" => T::Trim,
        "trimleft" => T::TrimLeft,
        "trimright" => T::TrimRight,
        "uppercase" => T::Uppercase,
        "urldecode" => T::UrlDecode,
        "urldecodeuni" => T::UrlDecodeUni,
        "urlencode" => T::UrlEncode,
        "utf8tounicode" => T::Utf8ToUnicode,
        _ => return Err(ErrorKind::UnknownTransformation(name.to_string())),
    };
    Ok(Some(t))
}

/// C's `isspace` in the C locale.
pub(crate) fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// `isspace` plus the non-breaking space, which `removeWhitespace` also removes (but
/// `compressWhitespace` keeps, in ModSecurity v3).
fn is_space(c: u8) -> bool {
    is_c_space(c) || c == 0xA0
}

impl Transformation {
    /// Applies the transformation to one value.
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        use Transformation as T;
        let parity = |f: fn(u8) -> u8| input.iter().map(|&c| f(c)).collect();
        match self {
            T::Base64Decode => decode::base64_strict(input),
            T::Base64DecodeExt => decode::base64_forgiving(input),
            T::Base64Encode => base64_encode(input),
            T::CmdLine => text::cmd_line(input),
            T::CompressWhitespace => text::compress_whitespace(input),
            T::CssDecode => decode::css(input),
            T::EscapeSeqDecode => decode::escape_seq(input),
            T::HexDecode => decode::hex_pairs(input),
            T::HexEncode => input
                .iter()
                .flat_map(|c| format!("{c:02x}").into_bytes())
                .collect(),
            T::HtmlEntityDecode => decode::html_entities(input),
            T::JsDecode => decode::js(input),
            T::Length => input.len().to_string().into_bytes(),
            T::Lowercase => input.to_ascii_lowercase(),
            T::Md5 => md5::Md5::digest(input).to_vec(),
            T::NormalisePath => text::normalise_path(input),
            T::NormalisePathWin => {
                let slashes: Vec<u8> = input
                    .iter()
                    .map(|&c| if c == b'\\' { b'/' } else { c })
                    .collect();
                text::normalise_path(&slashes)
            }
            T::ParityEven7bit => parity(|c| {
                let c = c & 0x7F;
                if c.count_ones() % 2 == 1 { c | 0x80 } else { c }
            }),
            T::ParityOdd7bit => parity(|c| {
                let c = c & 0x7F;
                if c.count_ones() % 2 == 0 { c | 0x80 } else { c }
            }),
            T::ParityZero7bit => parity(|c| c & 0x7F),
            T::RemoveComments => text::remove_comments(input),
            T::RemoveCommentsChar => text::remove_comment_chars(input),
            T::RemoveNulls => input.iter().copied().filter(|&c| c != 0).collect(),
            T::RemoveWhitespace => input.iter().copied().filter(|&c| !is_space(c)).collect(),
            T::ReplaceComments => text::replace_comments(input),
            T::ReplaceNulls => input
                .iter()
                .map(|&c| if c == 0 { b' ' } else { c })
                .collect(),
            T::Sha1 => sha1::Sha1::digest(input).to_vec(),
            T::SqlHexDecode => decode::sql_hex(input),
            T::Trim => trim_right(trim_left(input)).to_vec(),
            T::TrimLeft => trim_left(input).to_vec(),
            T::TrimRight => trim_right(input).to_vec(),
            T::Uppercase => input.to_ascii_uppercase(),
            T::UrlDecode => decode::url(input, false),
            T::UrlDecodeUni => decode::url(input, true),
            T::UrlEncode => url_encode(input),
            T::Utf8ToUnicode => text::utf8_to_unicode(input),
        }
    }
}

fn trim_left(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&c| !c.is_ascii_whitespace() && c != 0x0B)
        .unwrap_or(s.len());
    &s[start..]
}

fn trim_right(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&c| !c.is_ascii_whitespace() && c != 0x0B)
        .map_or(0, |p| p + 1);
    &s[..end]
}

fn base64_encode(input: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(input)
        .into_bytes()
}

/// `urlEncode`: everything but ASCII letters, digits and `*` (and space, as `+`) as `%hh`.
fn url_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for &c in input {
        match c {
            b' ' => out.push(b'+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' => out.push(c),
            _ => out.extend(format!("%{c:02x}").into_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Transformation as T;
    use super::*;

    fn t(name: &str, input: &[u8]) -> Vec<u8> {
        by_name(name)
            .expect("known")
            .expect("not none")
            .apply(input)
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_ones_refused() {
        assert_eq!(by_name("base64decode"), Ok(Some(T::Base64Decode)));
        assert_eq!(by_name("normalizePathWin"), Ok(Some(T::NormalisePathWin)));
        assert_eq!(by_name("none"), Ok(None));
        assert_eq!(
            by_name("rot13"),
            Err(ErrorKind::UnknownTransformation("rot13".into()))
        );
    }

    #[test]
    fn case_length_and_digests() {
        assert_eq!(t("lowercase", b"SeLeCT\xC9"), b"select\xC9");
        assert_eq!(t("uppercase", b"abc"), b"ABC");
        assert_eq!(t("length", b"hello"), b"5");
        assert_eq!(
            t("hexEncode", &t("sha1", b"abc")),
            b"a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            t("hexEncode", &t("md5", b"")),
            b"d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(t("hexEncode", b"a\x00"), b"6100");
        assert_eq!(t("base64Encode", b"Test"), b"VGVzdA==");
        assert_eq!(t("urlEncode", b"a b/c-d.e*"), b"a+b%2fc%2dd%2ee*");
    }

    #[test]
    fn cmd_line_as_the_manual_lists() {
        assert_eq!(
            t("cmdLine", br#"C:\WINDOWS\"sys"^tem32 , /c  net;user"#),
            b"c:windowssystem32/c net user"
        );
        assert_eq!(t("cmdLine", b"ls\t\t-la (x)"), b"ls -la(x)");
    }

    #[test]
    fn whitespace_nulls_and_trim() {
        assert_eq!(t("compressWhitespace", b"a \t\r\n\x0B b\xA0c"), b"a b\xA0c");
        assert_eq!(t("removeWhitespace", b" a b\tc\xA0"), b"abc");
        assert_eq!(t("removeNulls", b"a\0b\0"), b"ab");
        assert_eq!(t("replaceNulls", b"a\0b"), b"a b");
        assert_eq!(t("trim", b" \t a b \n"), b"a b");
        assert_eq!(t("trimLeft", b"  a "), b"a ");
        assert_eq!(t("trimRight", b"  a "), b"  a");
    }

    #[test]
    fn comments() {
        assert_eq!(
            t("replaceComments", b"sel/*x*/ect/**/1 */ 2/*open"),
            b"sel ect 1 */ 2 "
        );
        assert_eq!(
            t("removeComments", b"sel/*x*/ect <!--y-->1 -- rest"),
            b"select 1 "
        );
        assert_eq!(t("removeComments", b"a#b"), b"a");
        assert_eq!(t("removeComments", b"a/*x-->b<!--y*/c/*open"), b"abc ");
        assert_eq!(t("removeComments", b"a/*x*/"), b"a\0");
        assert_eq!(t("removeCommentsChar", b"a/*b*/c--d#e<!--f-->"), b"abcdef");
    }

    #[test]
    fn paths() {
        assert_eq!(t("normalisePath", b"/a//b/./c/../d/"), b"/a/b/d/");
        assert_eq!(t("normalisePath", b"/../../etc/passwd"), b"/etc/passwd");
        assert_eq!(t("normalisePath", b"../x/./y/.."), b"../x");
        assert_eq!(t("normalisePath", b"/a/b/.."), b"/a");
        assert_eq!(t("normalisePathWin", br"C:\a\..\b\\c"), b"C:/b/c");
    }

    #[test]
    fn utf8_and_parity() {
        assert_eq!(
            t("utf8toUnicode", "a\u{e9}\u{20ac}".as_bytes()),
            b"a%u00e9%u20ac"
        );
        assert_eq!(t("utf8toUnicode", b"a\xFFb"), b"a\xFFb");
        // Overlong `/` (an old IIS bypass): decoded, and flagged by the lead byte.
        assert_eq!(t("utf8toUnicode", b"\xC0\xAF"), b"%u002f\xC0");
        // A lead byte without its continuation bytes is dropped (a stray continuation byte
        // is kept); NULs are dropped.
        assert_eq!(t("utf8toUnicode", b"a\xE2\x82b\0"), b"a\x82b");
        assert_eq!(t("utf8toUnicode", "\u{1F600}".as_bytes()), b"%u1f600");
        assert_eq!(t("parityZero7bit", b"\xC1"), b"A");
        assert_eq!(t("parityEven7bit", b"AC"), b"A\xC3");
        assert_eq!(t("parityOdd7bit", b"AC"), b"\xC1C");
    }

    #[test]
    fn decoders_are_reachable_by_name() {
        assert_eq!(t("urlDecodeUni", b"%u0027or%201=1"), b"'or 1=1");
        assert_eq!(t("htmlEntityDecode", b"&lt;"), b"<");
        assert_eq!(t("jsDecode", br"\x3c"), b"<");
        assert_eq!(t("cssDecode", br"\3c"), b"<");
        assert_eq!(t("base64DecodeExt", b"P.HNj"), b"<sc");
        assert_eq!(t("sqlHexDecode", b"0x3c"), b"<");
        assert_eq!(t("escapeSeqDecode", br"\x3c"), b"<");
        assert_eq!(t("hexDecode", b"3c"), b"<");
    }
}
