//! Issue 10, requirement 1: a cache manifest planted in a shared bucket
//! cannot make another runner write outside the job's declared outputs.

use crate::util::*;

#[test]
fn a_planted_manifest_is_a_miss_and_writes_nothing_outside_the_outputs() {
    let a = Env::new();
    let remote = a.home.path().join("remote");
    for s in ["state", "logs", "cache"] {
        std::fs::create_dir_all(remote.join(s)).unwrap();
    }
    let yaml = format!(
        "profiles:\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\npipelines:\n  - name: build\n    jobs:\n      b:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps:\n          - run: mkdir -p out && cat seed.txt > out/artifact && echo built\n",
        r = remote.display()
    );
    a.write_project(&yaml);
    std::fs::write(a.dir().join("seed.txt"), "seed").unwrap();
    expect_code(&a.run(&["run", "build", "--profile", "team"]), 0);
    expect_code(&a.run(&["sync", "flush", "--profile", "team"]), 0);

    // The attacker rewrites the manifest: the pipeline file, a git hook
    // (setuid), and a path through `..`, all pointing at a blob it knows.
    let keys: Vec<_> = std::fs::read_dir(remote.join("cache/keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keys[0]).unwrap()).unwrap();
    let good = doc["manifest"]["files"][0].clone();
    let mut planted = Vec::new();
    for (path, mode) in [
        (".sparkwing/sparkwing.yaml", 0o644),
        (".git/hooks/pre-commit", 0o6755),
        ("out/../../escaped", 0o644),
    ] {
        let mut f = good.clone();
        f["path"] = path.into();
        f["mode"] = mode.into();
        planted.push(f);
    }
    planted.push(good);
    doc["manifest"]["files"] = planted.into();
    std::fs::write(&keys[0], doc.to_string()).unwrap();

    // Another runner with the same project sources.
    let b = Env::new();
    b.write_project(&yaml);
    std::fs::write(b.dir().join("seed.txt"), "seed").unwrap();
    let out = b.run(&["run", "build", "--profile", "team"]);
    expect_code(&out, 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("could not use the remote cache")
            && err.contains("not among the job's outputs"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("built"), "the job ran instead");
    assert_eq!(
        std::fs::read_to_string(b.dir().join(".sparkwing/sparkwing.yaml")).unwrap(),
        yaml
    );
    assert!(!b.dir().join(".git").exists());
    assert!(!b.dir().parent().unwrap().join("escaped").exists());
    assert_eq!(
        std::fs::read_to_string(b.dir().join("out/artifact")).unwrap(),
        "seed"
    );
}
