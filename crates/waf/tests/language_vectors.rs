//! The transformation and operator vectors of OWASP's `secrules-language-tests` (the ones
//! libmodsecurity's unit tests run), against this crate. The vectors are not vendored: set
//! `SECRULES_LANGUAGE_TESTS` to a checkout of github.com/owasp-modsecurity/secrules-language-tests
//! and run `cargo test -p gatehouse-waf --test language_vectors -- --ignored`: a local
//! conformance run (the corpus is not on a fresh machine), so the test is ignored by default and
//! fails when run without it.
//!
//! Inputs and outputs are read the way libmodsecurity's test runner reads them (`json2bin`:
//! the JSON text as UTF-8, then each `\xHH` and `\uHHHH` replaced by one byte).

use std::path::{Path, PathBuf};

use gatehouse_waf::evaluate::NoMacros;
use gatehouse_waf::{ErrorKind, operator, transform};

/// Vectors this crate does not follow (name and the start of the input), and why.
const KNOWN: &[(&str, &str)] = &[
    // libinjection is not in yet.
    ("detectSQLi", "ascii(substring(version() from 1 for 1))"),
    ("detectXSS", "<a href=\"javascript:alert(1)\">)"),
    // The runner's json2bin turns `\xag` into 0x0A in the input but the expected output was
    // written for the literal text: the vector cannot hold under any decoder.
    ("escapeSeqDecode", "\\8\\9\\666\\xag\\xga\\0123"),
    // A backslash before a NUL byte: libmodsecurity's expected output loses a space that
    // nothing in the transformation's description removes.
    ("cssDecode", "test\\a\\b\\f\\n\\r\\t\\v\\?"),
];

fn known(name: &str, input: &str) -> bool {
    KNOWN
        .iter()
        .any(|(n, start)| *n == name && input.starts_with(start))
}

/// libmodsecurity's `json2bin`.
fn json2bin(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for (marker, digits) in [(b'x', 2), (b'u', 4)] {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 2..i + 2 + digits);
            if bytes[i] == b'\\'
                && bytes.get(i + 1) == Some(&marker)
                && let Some(hex) = hex.filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                let value = u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("0"), 16);
                out.push(value.unwrap_or(0) as u8);
                i += 2 + digits;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    bytes
}

fn cases(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("vector directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            value.as_array().cloned().unwrap_or_default()
        })
        .collect()
}

#[test]
#[ignore = "a local conformance run: needs SECRULES_LANGUAGE_TESTS (secrules-language-tests checkout)"]
fn secrules_language_tests_vectors() {
    let root = std::env::var("SECRULES_LANGUAGE_TESTS")
        .expect("set SECRULES_LANGUAGE_TESTS to a secrules-language-tests checkout");
    let root = PathBuf::from(root);
    let (mut passed, mut unsupported, mut failures) = (0, 0, Vec::new());
    let text = |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or("").to_string();
    for case in cases(&root.join("transformations")) {
        let (name, input) = (text(&case, "name"), text(&case, "input"));
        let name = if name == "cmd_line" {
            "cmdLine".to_string()
        } else {
            name
        };
        let Ok(Some(t)) = transform::by_name(&name) else {
            unsupported += 1;
            continue;
        };
        let got = t.apply(&json2bin(&input));
        if got == json2bin(&text(&case, "output")) {
            passed += 1;
        } else if !known(&name, &input) {
            failures.push(format!(
                "t:{name} {input:?}: got {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    for case in cases(&root.join("operators")) {
        let (name, param, input) = (
            text(&case, "name"),
            text(&case, "param"),
            text(&case, "input"),
        );
        let op = match operator::compile(&name, &param, &root) {
            Ok(op) => op,
            // Refused at load (unknown operators, or arguments such as `@eq xxx` that
            // ModSecurity reads as 0 and this crate calls a mistake).
            Err(ErrorKind::UnknownOperator(_) | ErrorKind::BadValue { .. }) => {
                unsupported += 1;
                continue;
            }
            Err(e) => panic!("@{name} {param:?}: {e}"),
        };
        let want = case["ret"].as_i64().unwrap_or(-1) == 1;
        if op.matches(&json2bin(&input), &NoMacros) == want {
            passed += 1;
        } else if !known(&name, &input) {
            failures.push(format!("@{name} {param:?} on {input:?}: expected {want}"));
        }
    }
    println!(
        "{passed} vectors pass, {unsupported} not applicable, {} fail",
        failures.len()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty());
    assert!(passed > 4000, "only {passed} vectors ran");
}
