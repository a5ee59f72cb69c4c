//! The decoding transformations (URL, HTML entities, JavaScript, CSS, C escapes, Base64,
//! hex, SQL hex), each as ModSecurity's reference manual describes it: invalid encodings are
//! left as they are, and a `%uHHHH` or `\uHHHH` keeps its low byte (plus 0x20 for the
//! full-width ASCII range `FF01`–`FF5E`, as ModSecurity does when no unicode map is set).

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hex(a)? << 4 | hex(b)?)
}

/// The low byte of `\uHHHH` / `%uHHHH` (four hex digits at `d`), full-width ASCII shifted.
fn unicode_low_byte(d: &[u8]) -> Option<u8> {
    let high = hex2(d[0], d[1])?;
    let low = hex2(d[2], d[3])?;
    if high == 0xFF && low > 0 && low < 0x5F {
        Some(low + 0x20)
    } else {
        Some(low)
    }
}

/// `urlDecode` (`uni == false`) and `urlDecodeUni`: `%HH`, `+` as space; with `uni`, `%uHHHH`.
pub fn url(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'%' {
            if uni
                && matches!(input.get(i + 1), Some(b'u' | b'U'))
                && let Some(b) = input.get(i + 2..i + 6).and_then(unicode_low_byte)
            {
                out.push(b);
                i += 6;
                continue;
            }
            if let Some(b) = input.get(i + 1..i + 3).and_then(|h| hex2(h[0], h[1])) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if c == b'+' { b' ' } else { c });
        i += 1;
    }
    out
}

/// `htmlEntityDecode`: `&#DDD;`, `&#xHH;`, `&quot;`, `&nbsp;`, `&lt;`, `&gt;`, `&amp;` (no
/// other names, not even `&apos;`); the `;` is optional, a numeric entity keeps its low byte.
pub fn html_entities(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'&'
            && let Some((byte, len)) = html_entity(&input[i + 1..])
        {
            out.push(byte);
            i += 1 + len;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The entity after `&`: its byte and how many bytes it spans (including a `;`).
fn html_entity(s: &[u8]) -> Option<(u8, usize)> {
    let with_semicolon = |len: usize| {
        if s.get(len) == Some(&b';') {
            len + 1
        } else {
            len
        }
    };
    if s.first() == Some(&b'#') {
        let (radix, start) = match s.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = s[start..]
            .iter()
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        let text = std::str::from_utf8(&s[start..start + digits]).ok()?;
        // C's strtol saturates at LONG_MAX; ModSecurity keeps the low byte.
        let value = i64::from_str_radix(text, radix).unwrap_or(i64::MAX);
        return Some(((value & 0xFF) as u8, with_semicolon(start + digits)));
    }
    // The whole alphanumeric run is the name: `&ltx;` is not `<x;`.
    let len = s.iter().take_while(|c| c.is_ascii_alphanumeric()).count();
    let name = s[..len].to_ascii_lowercase();
    let byte = match name.as_slice() {
        b"quot" => b'"',
        b"amp" => b'&',
        b"lt" => b'<',
        b"gt" => b'>',
        b"nbsp" => 0xA0,
        _ => return None,
    };
    Some((byte, with_semicolon(len)))
}

/// `jsDecode`: `\uHHHH`, `\xHH`, `\OOO` (octal), `\a \b \f \n \r \t \v`, and `\c` as `c`.
pub fn js(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 == input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let next = input[i + 1];
        if next == b'u'
            && let Some(b) = input.get(i + 2..i + 6).and_then(unicode_low_byte)
        {
            out.push(b);
            i += 6;
        } else if next == b'x'
            && let Some(b) = input.get(i + 2..i + 4).and_then(|h| hex2(h[0], h[1]))
        {
            out.push(b);
            i += 4;
        } else if (b'0'..=b'7').contains(&next) {
            let (value, len) = octal(&input[i + 1..]);
            out.push(value);
            i += 1 + len;
        } else {
            out.push(c_escape(next).unwrap_or(next));
            i += 2;
        }
    }
    out
}

/// Up to three octal digits (at most `\377`): the byte and how many digits were used.
fn octal(s: &[u8]) -> (u8, usize) {
    let mut value = 0u16;
    let mut len = 0;
    while len < 3 && s.get(len).is_some_and(|c| (b'0'..=b'7').contains(c)) {
        let next = value * 8 + u16::from(s[len] - b'0');
        if next > 0xFF {
            break;
        }
        value = next;
        len += 1;
    }
    (value as u8, len)
}

fn c_escape(c: u8) -> Option<u8> {
    Some(match c {
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0B,
        _ => return None,
    })
}

/// `cssDecode` (CSS 2.1 §4.1.3): `\` and 1–6 hex digits is a character (its low byte,
/// full-width ASCII shifted), one whitespace after it is eaten; `\` and a newline vanish;
/// `\` and any other character is that character.
pub fn css(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let digits = input[i + 1..]
            .iter()
            .take(6)
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if digits > 0 {
            let d = &input[i + 1..i + 1 + digits];
            let low = if digits == 1 {
                hex(d[0])
            } else {
                hex2(d[digits - 2], d[digits - 1])
            };
            let mut byte = low.unwrap_or(0);
            let full_width = digits >= 4
                && d[..digits - 4].iter().all(|c| *c == b'0')
                && d[digits - 4..digits - 2].eq_ignore_ascii_case(b"ff");
            if full_width && byte > 0 && byte < 0x5F {
                byte += 0x20;
            }
            out.push(byte);
            i += 1 + digits;
            if input.get(i).is_some_and(|c| super::is_c_space(*c)) {
                i += 1;
            }
        } else {
            match input.get(i + 1) {
                Some(b'\n') | None => {}
                Some(c) => out.push(*c),
            }
            i += 2;
        }
    }
    out
}

/// `escapeSeqDecode`: ANSI C escapes `\a \b \f \n \r \t \v \\ \? \' \" \xHH \OOO` (three octal
/// digits at most, kept to a byte); after `\` anything else is kept without the backslash.
pub fn escape_seq(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'\\' && i + 1 < input.len() {
            let next = input[i + 1];
            if let Some(b) = c_escape(next) {
                out.push(b);
                i += 2;
                continue;
            }
            if matches!(next, b'\\' | b'?' | b'\'' | b'"') {
                out.push(next);
                i += 2;
                continue;
            }
            if matches!(next, b'x' | b'X')
                && let Some(b) = input.get(i + 2..i + 4).and_then(|h| hex2(h[0], h[1]))
            {
                out.push(b);
                i += 4;
                continue;
            }
            if (b'0'..=b'7').contains(&next) {
                // Up to three octal digits, kept to a byte (`\666` is 0xB6).
                let digits = input[i + 1..]
                    .iter()
                    .take(3)
                    .take_while(|c| (b'0'..=b'7').contains(*c))
                    .count();
                let value = input[i + 1..i + 1 + digits]
                    .iter()
                    .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 1 + digits;
                continue;
            }
            // Not an escape ModSecurity knows: the backslash goes, the byte stays.
            out.push(next);
            i += 2;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// `base64Decode`, as ModSecurity v3 does it (mbedTLS's strict decoder): the value up to a
/// NUL must be Base64 (spaces only before a line end, `\n` and `\r\n` skipped, at most two
/// `=` and nothing after them) or the result is empty; a last group of fewer than four
/// characters is dropped.
pub fn base64_strict(input: &[u8]) -> Vec<u8> {
    let input = &input[..memchr::memchr(0, input).unwrap_or(input.len())];
    let mut pads = 0;
    let mut i = 0;
    while i < input.len() {
        let spaces = input[i..].iter().take_while(|&&c| c == b' ').count();
        i += spaces;
        if i == input.len() {
            break;
        }
        let line_end = input[i] == b'\n' || input[i..].starts_with(b"\r\n");
        if !line_end {
            let c = input[i];
            let valid = spaces == 0
                && if c == b'=' {
                    pads += 1;
                    pads <= 2
                } else {
                    base64_value(c).is_some() && pads == 0
                };
            if !valid {
                return Vec::new();
            }
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut n, mut wanted) = (0u32, 0, 3);
    for &c in input.iter().filter(|c| !matches!(c, b'\r' | b'\n' | b' ')) {
        if c == b'=' {
            wanted -= 1;
        }
        acc = (acc << 6) | base64_value(c).unwrap_or(0);
        n += 1;
        if n == 4 {
            let bytes = acc.to_be_bytes();
            out.extend_from_slice(&bytes[1..1 + wanted]);
            (acc, n) = (0, 0);
        }
    }
    out
}

/// `base64DecodeExt`, as ModSecurity v3 does it: bytes that are not Base64 are skipped,
/// `=` too, except that a `=` after the first character of a group (and not followed by
/// another `=`) empties the result.
pub fn base64_forgiving(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let (mut acc, mut bits, mut count) = (0u32, 0u32, 0usize);
    let mut last_was_pad = false;
    for (k, &c) in input.iter().enumerate() {
        if c == b'=' {
            if input.get(k + 1) != Some(&b'=') && count % 4 == 1 {
                return Vec::new();
            }
            last_was_pad = true;
            continue;
        }
        last_was_pad = false;
        let Some(v) = base64_value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        count += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if last_was_pad && count % 4 == 1 {
        return Vec::new();
    }
    out
}

/// `hexDecode`: each pair of hex digits is a byte; an odd last digit is dropped. A pair that
/// is not hex becomes the byte ModSecurity's `x2c` computes from it.
pub fn hex_pairs(input: &[u8]) -> Vec<u8> {
    let x = |c: u8| {
        if c >= b'A' {
            (c & 0xDF).wrapping_sub(b'A').wrapping_add(10)
        } else {
            c.wrapping_sub(b'0')
        }
    };
    input
        .chunks_exact(2)
        .map(|p| x(p[0]).wrapping_mul(16).wrapping_add(x(p[1])))
        .collect()
}

/// `sqlHexDecode`: `0x` followed by hex pairs (MySQL's hex literal) becomes those bytes.
pub fn sql_hex(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let pairs = if input[i] == b'0' && matches!(input.get(i + 1), Some(b'x' | b'X')) {
            input[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_hexdigit())
                .count()
                / 2
        } else {
            0
        };
        if pairs == 0 {
            out.push(input[i]);
            i += 1;
            continue;
        }
        out.extend(hex_pairs(&input[i + 2..i + 2 + pairs * 2]));
        i += 2 + pairs * 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding() {
        assert_eq!(url(b"a%20b+c%3d%zz%4", false), b"a b c=%zz%4");
        assert_eq!(url(b"%u0041%uff1c%u00", false), b"%u0041%uff1c%u00");
        assert_eq!(url(b"%u0041%uff1c%u00", true), b"A<%u00");
        assert_eq!(url(b"%uFF0E%uFF0E%u2215", true), b"..\x15");
    }

    #[test]
    fn html_entity_decoding() {
        assert_eq!(
            html_entities(b"&lt;script&gt;&#x41;&#66&QUOT;&nbsp;&amp&bogus;&#;"),
            b"<script>AB\"\xA0&&bogus;&#;"
        );
        assert_eq!(
            html_entities(b"&apos;&ltx;&#99999999999999999999;"),
            b"&apos;&ltx;\xFF"
        );
        assert_eq!(html_entities(b"&#x141;"), b"A");
    }

    #[test]
    fn js_decoding() {
        assert_eq!(js(br"\x41\u0042\uff0e\101\n\q\"), b"AB.A\nq\\");
        assert_eq!(js(br"\x4"), b"x4");
    }

    #[test]
    fn css_decoding() {
        assert_eq!(
            css(br"\61 b\000062\;\
x\ff0e"),
            b"abb;x."
        );
        assert_eq!(css(br"j\61vascript"), b"javascript");
        assert_eq!(css(b"a\\"), b"a");
    }

    #[test]
    fn escape_sequences() {
        assert_eq!(escape_seq(br#"\x41\102\n\\\"\q\"#), b"AB\n\\\"q\\");
        assert_eq!(escape_seq(br"\8\9\666\x\X41\0123"), b"89\xB6xA\n3");
    }

    #[test]
    fn base64_variants() {
        assert_eq!(base64_strict(b"VGVzdENhc2U="), b"TestCase");
        assert_eq!(base64_strict(b"VGVzdA=="), b"Test");
        // Strict: one bad byte, a space inside a line or data after `=` empties the result.
        assert!(base64_strict(b"VGVz.dENhc2U=").is_empty());
        assert!(base64_strict(b"VGVz dA==").is_empty());
        assert!(base64_strict(b"VG=Vz").is_empty());
        // Line ends and trailing spaces are fine; an unfinished last group is dropped.
        assert_eq!(base64_strict(b"VGVz\r\ndA==  "), b"Test");
        assert_eq!(base64_strict(b"VGVzdA"), b"Tes");
        assert_eq!(base64_forgiving(b"VGVz.dENhc2U="), b"TestCase");
        assert_eq!(base64_forgiving(b"VGVzdA"), b"Test");
        assert_eq!(base64_forgiving(b"V=GVz"), b"");
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(hex_pairs(b"414243a"), b"ABC");
        assert_eq!(sql_hex(b"SELECT 0x616263, 0x6"), b"SELECT abc, 0x6");
    }
}
