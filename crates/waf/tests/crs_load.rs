//! Loads the OWASP CRS 3.3.4 rule files of Debian's `modsecurity-crs` package as they are
//! and checks that everything in them parses and compiles. Skipped (loudly) when the package
//! is not installed, unless `CI=true`: the CI script installs it, so there it must be present.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gatehouse_waf::{Operator, RegexEngine, Ruleset, load};

const RULES: &str = "/usr/share/modsecurity-crs/rules";
const SETUP: [&str; 2] = [
    "/etc/modsecurity/crs/crs-setup.conf",
    "/usr/share/modsecurity-crs/crs-setup.conf.example",
];

/// crs-setup.conf, then every rules/*.conf sorted (the order of ModSecurity's `Include`).
fn crs_files() -> Option<Vec<PathBuf>> {
    if !Path::new(RULES).is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{RULES} is missing under CI=true: install Debian's modsecurity-crs"
        );
        eprintln!("SKIPPED: {RULES} is missing (apt-get install modsecurity-crs)");
        return None;
    }
    let setup = SETUP.iter().map(PathBuf::from).find(|p| p.is_file())?;
    let mut rules: Vec<PathBuf> = std::fs::read_dir(RULES)
        .expect("rules directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    rules.sort();
    Some(std::iter::once(setup).chain(rules).collect())
}

/// Counts in the files themselves what the load should find: directives (lines starting a
/// `Sec...` directive outside comments), `id:` actions, `@rx`, `@rbl`/`@geoLookup`.
struct Expected {
    directives: usize,
    ids: usize,
    rx: usize,
    never_match: usize,
}

fn expected(files: &[PathBuf]) -> Expected {
    let mut e = Expected {
        directives: 0,
        ids: 0,
        rx: 0,
        never_match: 0,
    };
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable");
        for line in text
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with('#'))
        {
            if line.starts_with("Sec") {
                e.directives += 1;
            }
            if line.starts_with("\"id:") || line.contains(",id:") || line.contains("\"id:") {
                e.ids += 1;
            }
            e.rx += line.matches("\"@rx ").count() + line.matches("\"!@rx ").count();
            e.never_match += line.matches("\"@rbl ").count() + line.matches("\"@geoLookup").count();
        }
    }
    e
}

#[test]
fn crs_334_loads_completely() {
    let Some(files) = crs_files() else { return };
    let started = Instant::now();
    let set = match load(&files) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            panic!("{} load errors", errors.len());
        }
    };
    let elapsed = started.elapsed();
    let want = expected(&files);
    let s = &set.stats;
    println!(
        "CRS: {} files, {} directives, {} rules ({} chained links, {} markers) in {elapsed:?}",
        files.len(),
        s.directives,
        s.rules,
        s.chained_links,
        s.markers
    );
    println!(
        "@rx: {} regex as written, {} regex after translation, {} fancy-regex, {} with a macro \
         ({} with a fancy-regex twin for `^` after a final newline); {} @pm automata",
        s.rx_regex, s.rx_translated, s.rx_backtracking, s.rx_macro, s.rx_caret_twins, s.pm
    );
    for w in &set.warnings {
        println!("warning: {w}");
    }
    assert_eq!(s.directives, want.directives, "every directive parsed");
    assert_eq!(s.rules, want.ids, "one rule per id:");
    let rx = s.rx_regex + s.rx_translated + s.rx_backtracking + s.rx_macro;
    assert_eq!(rx, want.rx, "every @rx compiled");
    let rx_links = set
        .links()
        .filter(|r| matches!(r.operator, Operator::Rx(..) | Operator::RxMacro(_)))
        .count();
    assert_eq!(rx_links, want.rx);
    let never = |w: &&gatehouse_waf::Warning| {
        w.message.starts_with("@rbl") || w.message.starts_with("@geoLookup")
    };
    let never_ids: Vec<_> = set
        .warnings
        .iter()
        .filter(never)
        .filter_map(|w| w.rule_id)
        .collect();
    assert_eq!(
        never_ids.len(),
        want.never_match,
        "each @rbl/@geoLookup rule warned about"
    );
    assert_eq!(never_ids, [910100, 910140]);
    assert!(set.warnings.iter().all(|w| w.rule_id.is_some()));
    assert_eq!(
        ids_by_engine(&set, RegexEngine::Backtracking),
        [920120, 920600, 942130, 942260, 953120]
    );
    assert_eq!(
        ids_by_engine(&set, RegexEngine::Translated),
        [
            921200, 932100, 932105, 932106, 932150, 932170, 932171, 933170, 933180, 934100, 941380,
            942380, 942420, 942421, 942430, 942431, 942432, 942440
        ]
    );
    let limit = if cfg!(debug_assertions) { 3.0 } else { 1.0 };
    assert!(
        elapsed.as_secs_f64() < limit,
        "loaded in {elapsed:?}, limit {limit} s"
    );
}

/// The ids of the rules (chains included) with an `@rx` run by `engine`, sorted.
fn ids_by_engine(set: &Ruleset, engine: RegexEngine) -> Vec<u64> {
    let mut ids: Vec<u64> = set
        .entries
        .iter()
        .filter_map(|e| match e {
            gatehouse_waf::Entry::Rule(r) => Some(&**r),
            gatehouse_waf::Entry::Marker(_) => None,
        })
        .filter(|r| {
            r.links()
                .any(|l| matches!(l.operator, Operator::Rx(_, e) if e == engine))
        })
        .filter_map(|r| r.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Debian's `owasp-crs.load` includes `crs-setup.conf`, the exclusion files and `rules/*.conf`:
/// loading it is loading the same rules.
#[test]
fn debian_load_file_follows_its_includes() {
    let Some(files) = crs_files() else { return };
    let load_file = Path::new("/usr/share/modsecurity-crs/owasp-crs.load");
    if !load_file.is_file() {
        eprintln!("SKIPPED: no {}", load_file.display());
        return;
    }
    let direct = load(&files).expect("CRS loads");
    let included = load(&[load_file]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(included.stats.rules, direct.stats.rules);
    assert_eq!(included.stats.rx_regex, direct.stats.rx_regex);
    assert_eq!(included.warnings.len(), direct.warnings.len());
}
