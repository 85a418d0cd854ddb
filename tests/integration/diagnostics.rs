//! Every malformed fleet file in tests/fixtures/invalid gives a span diagnostic
//! (snapshotted), exit 1, and leaves the data dir untouched.

use std::path::Path;

use crate::support::World;

#[test]
fn malformed_fleet_files_get_span_diagnostics_and_touch_nothing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut fixtures: Vec<_> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    fixtures.sort();
    assert!(fixtures.len() >= 25, "the corpus has {} files; keep at least 25", fixtures.len());
    for fixture in fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let w = World::new();
        w.write(&name, &std::fs::read_to_string(&fixture).unwrap());
        // Files some fixtures refer to, present so that only the intended problem shows.
        w.write("souls/alice.md", "# Alice\n");

        let v = w.fleet(&["validate", &name]);
        assert_eq!(v.code, 1, "{name}: validate should fail\n{}", v.all());
        assert!(v.stdout.is_empty(), "{name}: diagnostics go to stderr");
        let located = format!("[{name}:");
        assert!(v.stderr.contains(&located), "{name}: no file:line:col in\n{}", v.stderr);
        insta::assert_snapshot!(name.clone(), v.stderr);

        for cmd in [&["plan", name.as_str()][..], &["apply", name.as_str()][..]] {
            let r = w.fleet(cmd);
            assert_eq!(r.code, 1, "{name}: {cmd:?} should fail\n{}", r.all());
            assert_eq!(r.stderr, v.stderr, "{name}: {cmd:?} reports the same problems");
        }
        assert!(!w.xdg_data().exists(), "{name}: the data dir was touched");
    }
}
