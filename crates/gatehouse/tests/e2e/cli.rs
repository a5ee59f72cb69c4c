//! The command line: check (ok / every error located, exit 1), schema, version, and every file
//! in examples/ passing check.

use crate::peer::gatehouse_command as gatehouse;

#[test]
fn check_accepts_every_example() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let out = gatehouse().args(["check", "-c"]).arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
        n += 1;
    }
    assert!(n >= 2, "expected examples in {}", dir.display());
}

#[test]
fn check_prints_every_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        "[global]\ngrace_period = \"soon\"\n\n[listeners.web]\nbind = \"0.0.0.0:99999\"\n\n[[routes]]\nupstream = \"missing\"\n",
    )
    .unwrap();
    let out = gatehouse().args(["check", "-c"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = p.display().to_string();
    for needle in [
        format!("{f}:2:16: global.grace_period:"),
        format!("{f}:5:8: listeners.web.bind:"),
        format!("{f}:8:12: routes[0].upstream: no upstream named `missing`"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");
    let missing = gatehouse()
        .args(["check", "-c", "/nonexistent/gh.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn schema_and_version() {
    let out = gatehouse().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["properties"]["listeners"].is_object());
    let out = gatehouse().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gatehouse "));
}
