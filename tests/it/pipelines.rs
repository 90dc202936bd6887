//! Pipeline files: validation before anything runs; list and new.

use crate::util::*;

#[test]
fn invalid_files_are_rejected_before_anything_runs() {
    let cases: &[(&str, &[&str])] = &[
        ("pipelines:\n  - name: p\n    jobs:\n      a:\n        step: []\n", &["sparkwing.yaml:5:9:", "unknown field `step`"]),
        ("pipelines:\n  - name: p\n    colour: red\n    jobs: {a: {steps: [{run: x}]}}\n", &["sparkwing.yaml:3:", "unknown field `colour`"]),
        ("pipelines:\n  - name: p\n    jobs:\n      a: {steps: [{run: x}]}\n      a: {steps: [{run: y}]}\n", &["sparkwing.yaml:", "duplicate key `a`"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {steps: [{run: x}]}}\n  - name: p\n    jobs: {a: {steps: [{run: x}]}}\n", &["duplicate pipeline name `p`"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {needs: [ghost], steps: [{run: x}]}}\n", &["job `a` needs `ghost`"]),
        ("pipelines:\n  - name: p\n    jobs:\n      a: {needs: [b], steps: [{run: x}]}\n      b: {needs: [a], steps: [{run: x}]}\n", &["cycle", "a -> b -> a"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {timeout: soon, steps: [{run: x}]}}\n", &["invalid duration `soon`"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {cache: {key: [x], outputs: [o], on_limit: race}, steps: [{run: x}]}}\n", &["unknown variant `race`"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {steps: []}}\n", &["has no steps"]),
        ("pipelines:\n  - name: p\n    jobs: {a: {steps: [{run: x}], working_directory: ../up}}\n", &["inside the project"]),
        ("pipelines: [\n", &["sparkwing.yaml:"]),
        // Issue 10: hostile documents are refused before they are loaded
        // (these took 2.5 s and 30 s to refuse in a debug build).
        (&"[".repeat(100_000), &["sparkwing.yaml:1:65: nesting deeper than 64 levels"]),
        (&format!("pipelines: {}", "{a: ".repeat(50_000)), &["sparkwing.yaml:1:", "nesting deeper than 64 levels"]),
        (&alias_bomb(), &["sparkwing.yaml:", "aliases expand to more than 100000 nodes"]),
        (&format!("#{}\n", "x".repeat(1 << 20)), &["sparkwing.yaml", "larger than the 1 MiB limit"]),
    ];
    for (yaml, wants) in cases {
        // Every case also carries a valid pipeline that must not run.
        let env = Env::with_pipelines(yaml);
        let out = env.run(&["run", "p"]);
        expect_code(&out, 2);
        let e = text(&out.stderr);
        for w in *wants {
            assert!(e.contains(w), "{yaml:?}: stderr lacks {w:?}: {e}");
        }
        assert!(
            !env.sw_home().exists(),
            "{yaml:?}: nothing may run or be recorded"
        );
        expect_code(&env.run(&["pipeline", "list"]), 2);
    }
}

/// A pipeline whose jobs all repeat one anchored list of 20,000 steps:
/// 60 KiB of YAML that would load as 600,000 steps.
fn alias_bomb() -> String {
    let mut y = format!(
        "pipelines:\n  - name: p\n    jobs:\n      j0: {{steps: &s [{}]}}\n",
        "{run: x}, ".repeat(20_000)
    );
    for i in 1..30 {
        y.push_str(&format!("      j{i}: {{steps: *s}}\n"));
    }
    y
}

#[test]
fn pipeline_new_scaffolds_a_working_entry_and_list_shows_it() {
    let env = Env::new();
    let out = env.run(&["pipeline", "new", "--name", "build"]);
    expect_code(&out, 0);
    assert!(text(&out.stdout).contains("sparkwing run build"));
    // A second one goes into the same file, keeping the first.
    std::fs::write(
        env.dir().join(".sparkwing/sparkwing.yaml"),
        format!(
            "# team pipelines\n{}\ndefaults: {{}}\n",
            std::fs::read_to_string(env.dir().join(".sparkwing/sparkwing.yaml")).unwrap()
        ),
    )
    .unwrap();
    expect_code(&env.run(&["pipeline", "new", "--name", "deploy"]), 0);
    let list = env.json(&["pipeline", "list", "-o", "json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build", "deploy"]);
    assert!(
        std::fs::read_to_string(env.dir().join(".sparkwing/sparkwing.yaml"))
            .unwrap()
            .starts_with("# team pipelines")
    );
    let out = env.run(&["run", "deploy"]);
    expect_code(&out, 0);
    assert!(text(&out.stdout).contains("hello from deploy; replace this step"));
    // Duplicates and bad names are refused, and the file is left alone.
    let before = std::fs::read(env.dir().join(".sparkwing/sparkwing.yaml")).unwrap();
    expect_code(&env.run(&["pipeline", "new", "--name", "build"]), 2);
    expect_code(&env.run(&["pipeline", "new", "--name", "../evil"]), 2);
    assert_eq!(
        std::fs::read(env.dir().join(".sparkwing/sparkwing.yaml")).unwrap(),
        before
    );
}

#[test]
fn the_project_is_found_from_a_subdirectory() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: where\n    jobs: {a: {steps: [{run: pwd > where.txt}]}}\n",
    );
    let sub = env.dir().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    let out = env
        .cmd(&["run", "where"])
        .current_dir(&sub)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let got = std::fs::read_to_string(env.dir().join("where.txt")).unwrap();
    assert_eq!(
        std::path::Path::new(got.trim()).canonicalize().unwrap(),
        env.dir().canonicalize().unwrap(),
        "steps run in the project directory"
    );
}
