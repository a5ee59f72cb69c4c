//! `gatehouse_waf::load` on small rule files written for each test: chains, removals and
//! updates applied in file order, defaults, and errors that name the file, line and directive.

use std::path::PathBuf;

use gatehouse_waf::transform::Transformation;
use gatehouse_waf::{Entry, ErrorKind, LoadError, Ruleset, load};

/// Writes `files` (name, text) to a fresh directory and returns their paths in order.
fn write(test: &str, files: &[(&str, &str)]) -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-waf-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        })
        .collect()
}

fn ok(test: &str, text: &str) -> Ruleset {
    load(&write(test, &[("rules.conf", text)])).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(test: &str, text: &str) -> Vec<LoadError> {
    load(&write(test, &[("rules.conf", text)])).expect_err("must fail")
}

#[test]
fn chains_take_the_next_rule_and_the_first_ones_phase() {
    let set = ok(
        "chain",
        "SecRule REQUEST_METHOD \"@streq POST\" \"id:10,phase:1,deny,chain\"\n\
         SecRule &REQUEST_HEADERS:Content-Length \"@eq 0\" \"chain\"\n\
         SecRule REQUEST_URI \"@beginsWith /upload\" \"t:lowercase\"\n\
         SecMarker END\n",
    );
    assert_eq!(set.stats.rules, 1);
    assert_eq!(set.stats.chained_links, 2);
    assert_eq!(set.stats.markers, 1);
    let rule = set.rule(10).expect("rule 10");
    let links: Vec<_> = rule.links().collect();
    assert_eq!(links.len(), 3);
    assert!(links.iter().all(|l| l.phase == 1));
    assert!(links[1].targets[0].count);
    assert_eq!(links[2].transformations, [Transformation::Lowercase]);
    assert!(matches!(set.entries[1], Entry::Marker(ref m) if m == "END"));
}

#[test]
fn a_chain_may_not_end_a_file_or_meet_another_directive() {
    let e = errors("dangling", "SecRule ARGS \"@rx a\" \"id:1,chain\"\n");
    assert_eq!(e[0].kind, ErrorKind::DanglingChain);
    assert_eq!(e[0].at.line, 1);
    let e = errors(
        "interrupted",
        "SecRule ARGS \"@rx a\" \"id:1,chain\"\nSecMarker X\n",
    );
    assert_eq!(e[0].kind, ErrorKind::DanglingChain);
}

#[test]
fn removals_and_updates_apply_to_the_rules_before_them() {
    let set = ok(
        "remove",
        "SecRule ARGS \"@rx a\" \"id:100,tag:'attack-x',msg:'old'\"\n\
         SecRule ARGS \"@rx b\" \"id:200\"\n\
         SecRule ARGS \"@rx c\" \"id:250\"\n\
         SecRuleRemoveById 200-220\n\
         SecRuleUpdateTargetById 100 \"!ARGS:password\"\n\
         SecRuleUpdateActionById 100 \"msg:'new',t:lowercase\"\n\
         SecRuleRemoveByTag attack-y\n\
         SecRule ARGS \"@rx d\" \"id:210\"\n",
    );
    let ids: Vec<_> = set.links().filter_map(|r| r.id).collect();
    assert_eq!(ids, [100, 250, 210], "210 comes after the removal");
    let r100 = set.rule(100).expect("100");
    assert_eq!(r100.targets.len(), 2);
    assert!(r100.targets[1].exclude);
    assert_eq!(r100.values("msg").collect::<Vec<_>>(), ["new"]);
    assert_eq!(r100.transformations, [Transformation::Lowercase]);
    let set = ok(
        "remove-tag",
        "SecRule ARGS \"@rx a\" \"id:1,tag:'x'\"\nSecRuleRemoveByTag x\n",
    );
    assert_eq!(set.stats.rules, 0);
}

#[test]
fn default_actions_give_transformations_until_t_none() {
    let set = ok(
        "defaults",
        "SecDefaultAction \"phase:2,log,auditlog,pass,t:lowercase\"\n\
         SecRule ARGS \"@rx a\" \"id:1,phase:2,t:urlDecode\"\n\
         SecRule ARGS \"@rx a\" \"id:2,phase:2,t:none,t:trim\"\n\
         SecRule ARGS \"@rx a\" \"id:3,phase:1\"\n",
    );
    let t = |id| set.rule(id).expect("rule").transformations.clone();
    assert_eq!(t(1), [Transformation::Lowercase, Transformation::UrlDecode]);
    assert_eq!(t(2), [Transformation::Trim]);
    assert!(t(3).is_empty());
    assert!(set.default_actions[1].iter().any(|a| a.name == "pass"));
}

#[test]
fn every_error_is_reported_with_file_line_and_directive() {
    let e = errors(
        "names",
        "SecRule ARGZ \"@rx a\" \"id:1\"\n\
         SecRule ARGS \"@foo a\" \"id:2\"\n\
         SecRule ARGS \"@rx a\" \\\n  \"id:3,t:rot13\"\n\
         SecRule ARGS \"@rx a\" \"id:4,exec:x.sh\"\n\
         SecRule ARGS \"@rx a\" \"id:5,ctl:fooEngine=On\"\n\
         SecFooBar On\n\
         SecRule ARGS \"@rx (\" \"id:6\"\n\
         SecRule ARGS \"@rx a\" \"phase:2\"\n\
         SecRule ARGS \"@rx a\" \"id:7\"\n\
         SecRule ARGS \"@rx b\" \"id:7\"\n",
    );
    let lines: Vec<_> = e.iter().map(|e| e.at.line).collect();
    assert_eq!(lines, [1, 2, 3, 5, 6, 7, 8, 9, 11]);
    assert_eq!(e[0].kind, ErrorKind::UnknownVariable("ARGZ".into()));
    assert_eq!(e[1].kind, ErrorKind::UnknownOperator("foo".into()));
    assert_eq!(e[2].kind, ErrorKind::UnknownTransformation("rot13".into()));
    assert_eq!(e[3].kind, ErrorKind::UnknownAction("exec".into()));
    assert_eq!(e[4].kind, ErrorKind::UnknownAction("ctl:fooEngine".into()));
    assert_eq!(e[5].kind, ErrorKind::UnknownDirective);
    assert!(matches!(e[6].kind, ErrorKind::Regex { .. }));
    let text = e[2].to_string();
    assert!(
        text.ends_with("rules.conf:3: SecRule: unsupported transformation `t:rot13`"),
        "{text}"
    );
    assert_eq!(e[5].directive, "SecFooBar");
}

#[test]
fn settings_are_kept_and_data_files_found_beside_the_rules() {
    let paths = write(
        "settings",
        &[
            ("words.data", "# comment\nfoo\n\nBar baz\n"),
            (
                "rules.conf",
                "SecRuleEngine DetectionOnly\nSecCollectionTimeout 600\n\
                 SecRule ARGS \"@pmFromFile words.data\" \"id:1\"\n",
            ),
        ],
    );
    let set = load(&paths[1..]).expect("loads");
    assert_eq!(set.settings.len(), 2);
    assert_eq!(set.settings[0].name, "SecRuleEngine");
    assert_eq!(set.settings[0].args, ["DetectionOnly"]);
    assert_eq!(set.stats.pm, 1);
    let e = load(&[paths[1].with_file_name("missing.conf")]).expect_err("missing file");
    assert!(matches!(e[0].kind, ErrorKind::Io(_)));
    assert!(
        e[0].to_string()
            .contains("missing.conf: cannot read the file"),
        "{}",
        e[0]
    );
    let bom = write("bom", &[("bom.conf", "\u{feff}SecRuleEngine On\n")]);
    assert_eq!(
        load(&bom).expect("a BOM is skipped").settings[0].name,
        "SecRuleEngine"
    );
}

#[test]
fn includes_are_followed_in_place() {
    let paths = write(
        "include",
        &[
            ("b-2.conf", "SecRule ARGS \"@rx b\" \"id:2\"\n"),
            ("b-1.conf", "SecRule ARGS \"@rx a\" \"id:1\"\n"),
            ("other.txt", "not rules\n"),
            (
                "main.conf",
                "Include b-*.conf\nIncludeOptional absent-*.conf\nSecRule ARGS \"@rx c\" \"id:3\"\n",
            ),
        ],
    );
    let set = load(&paths[3..]).unwrap_or_else(|e| panic!("{e:?}"));
    let ids: Vec<_> = set.links().filter_map(|r| r.id).collect();
    assert_eq!(ids, [1, 2, 3], "sorted glob, in place");
    let missing = write("include-missing", &[("m.conf", "Include nothing-*.conf\n")]);
    let e = load(&missing).expect_err("Include of nothing");
    assert!(e[0].to_string().contains("m.conf:1: Include:"), "{}", e[0]);
    let looping = write("include-loop", &[("self.conf", "Include self.conf\n")]);
    let e = load(&looping).expect_err("a loop");
    assert!(e.iter().any(|e| e.to_string().contains("nest deeper")));
}
