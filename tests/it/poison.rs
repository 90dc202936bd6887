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
    let mut doc = manifest_doc(&keys[0]);
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

/// Issue 10, requirement 2: with `signing_key_source`, runners sign the
/// manifests they publish and restore only manifests signed with the key.
#[test]
fn a_signed_cache_restores_only_manifests_signed_with_the_key() {
    const KEY: &str = "a shared secret of 32 bytes, ok!";
    let a = Env::new();
    let remote = a.home.path().join("remote");
    for s in ["state", "logs", "cache"] {
        std::fs::create_dir_all(remote.join(s)).unwrap();
    }
    let yaml = |signed: bool| {
        format!(
            "profiles:\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache{s} }}\npipelines:\n  - name: build\n    jobs:\n      b:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps:\n          - run: mkdir -p out && cat seed.txt > out/artifact && echo built\n",
            r = remote.display(),
            s = if signed { ", signing_key_source: 'env:SW_CACHE_KEY'" } else { "" }
        )
    };
    let runner = |signed: bool| {
        let e = Env::new();
        e.write_project(&yaml(signed));
        std::fs::write(e.dir().join("seed.txt"), "seed").unwrap();
        e
    };
    let run = |e: &Env, key: Option<&str>| {
        let mut c = e.cmd(&["run", "build", "--profile", "team"]);
        c.env_remove("SW_CACHE_KEY");
        if let Some(k) = key {
            c.env("SW_CACHE_KEY", k);
        }
        let out = c.output().unwrap();
        let mut f = e.cmd(&["sync", "flush", "--profile", "team"]);
        if let Some(k) = key {
            f.env("SW_CACHE_KEY", k);
        }
        expect_code(&f.output().unwrap(), 0);
        out
    };
    let manifest_path = || {
        let keys: Vec<_> = std::fs::read_dir(remote.join("cache/keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys[0].clone()
    };

    // A key that is missing or too short stops the run before it starts.
    a.write_project(&yaml(true));
    std::fs::write(a.dir().join("seed.txt"), "seed").unwrap();
    let out = a
        .cmd(&["run", "build", "--profile", "team"])
        .env_remove("SW_CACHE_KEY")
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("signing_key_source env:SW_CACHE_KEY is unset"),
        "{}",
        text(&out.stderr)
    );
    let out = a
        .cmd(&["run", "build", "--profile", "team"])
        .env("SW_CACHE_KEY", "short")
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("at least 16"),
        "{}",
        text(&out.stderr)
    );

    // Runner A publishes a signed manifest; runner B with the key hits it.
    expect_code(&run(&a, Some(KEY)), 0);
    let signed_doc = std::fs::read(manifest_path()).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&sparkwing::remote::pack::manifest_json(&signed_doc).unwrap())
            .unwrap();
    assert!(
        v["signature"].as_str().unwrap().starts_with("hmac-sha256:"),
        "{v}"
    );
    assert!(
        !text(&signed_doc).contains(KEY),
        "the key itself is never written"
    );
    let b = runner(true);
    let out = run(&b, Some(KEY));
    expect_code(&out, 0);
    assert!(
        !text(&out.stdout).contains("built"),
        "a signed hit restores, the job does not run"
    );
    assert_eq!(
        std::fs::read(b.dir().join("out/artifact")).unwrap(),
        b"seed"
    );

    // An attacker without the key points the manifest at a blob of its own
    // (inside the outputs, so only the signature can catch it).
    let evil = b"evil".to_vec();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&evil)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let blob = remote.join(format!("cache/cas/{}/{sha}", &sha[..2]));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, &evil).unwrap();
    let mut forged = v.clone();
    as_version_1(&mut forged);
    forged["manifest"]["files"][0]["sha256"] = sha.clone().into();
    forged["manifest"]["files"][0]["size"] = 4.into();
    std::fs::write(manifest_path(), forged.to_string()).unwrap();
    let c = runner(true);
    let out = run(&c, Some(KEY));
    expect_code(&out, 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("could not use the remote cache") && err.contains("signature does not match"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("built"), "the job ran instead");
    assert_eq!(
        std::fs::read(c.dir().join("out/artifact")).unwrap(),
        b"seed"
    );

    // Unsigned (as a runner without the key writes it): refused by signers,
    // still accepted by a profile without a key (behaviour unchanged).
    let mut unsigned = forged.clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    std::fs::write(manifest_path(), unsigned.to_string()).unwrap();
    let d = runner(true);
    let out = run(&d, Some(KEY));
    let err = text(&out.stderr);
    assert!(err.contains("it is not signed"), "{err}");
    assert_eq!(
        std::fs::read(d.dir().join("out/artifact")).unwrap(),
        b"seed"
    );
    std::fs::write(manifest_path(), unsigned.to_string()).unwrap();
    let e = runner(false);
    let out = run(&e, None);
    expect_code(&out, 0);
    assert!(
        !text(&out.stdout).contains("built"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(e.dir().join("out/artifact")).unwrap(),
        b"evil",
        "without a key the bucket is trusted, as documented"
    );
}

/// Issue 10 (adversarial pass): an entry imported without the key's
/// signature (through a profile without signing) is neither a hit for a
/// signing profile nor published again under its key.
#[test]
fn an_unsigned_import_is_not_trusted_or_laundered_by_a_signing_profile() {
    const KEY: &str = "a shared secret of 32 bytes, ok!";
    let env = Env::new();
    let remote = env.home.path().join("remote");
    for s in ["state", "logs", "cache"] {
        std::fs::create_dir_all(remote.join(s)).unwrap();
    }
    let r = remote.display();
    let yaml = format!(
        "profiles:\n  plain:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache }}\n  team:\n    state: {{ type: filesystem, path: {r}/state }}\n    logs: {{ type: filesystem, path: {r}/logs }}\n    cache: {{ type: filesystem, path: {r}/cache, signing_key_source: 'env:SW_CACHE_KEY' }}\npipelines:\n  - name: build\n    jobs:\n      b:\n        cache: {{ key: [seed.txt], outputs: [out] }}\n        steps:\n          - run: mkdir -p out && cat seed.txt > out/artifact && echo built\n"
    );
    env.write_project(&yaml);
    std::fs::write(env.dir().join("seed.txt"), "seed").unwrap();
    let run = |args: &[&str]| env.cmd(args).env("SW_CACHE_KEY", KEY).output().unwrap();
    // An honest signed run publishes the key's manifest.
    expect_code(&run(&["run", "build", "--profile", "team"]), 0);
    expect_code(&run(&["sync", "flush", "--profile", "team"]), 0);
    let team_run = env.json(&["runs", "list", "-o", "json", "--limit", "1"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key_file = std::fs::read_dir(remote.join("cache/keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let honest = manifest_doc(&key_file);

    // The attacker plants an unsigned manifest (an extra executable), naming
    // the victim's own run, with a blob of its own.
    let evil = b"#!/bin/sh\necho pwned\n".to_vec();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&evil)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::create_dir_all(remote.join(format!("cache/cas/{}", &sha[..2]))).unwrap();
    std::fs::write(remote.join(format!("cache/cas/{}/{sha}", &sha[..2])), &evil).unwrap();
    let mut planted = honest.clone();
    // A manifest of the blob-per-file form (still read): the honest files'
    // blobs are in the victim's CAS, the planted one in the bucket.
    as_version_1(&mut planted);
    planted.as_object_mut().unwrap().remove("signature");
    planted["run_id"] = team_run.clone().into();
    planted["manifest"]["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": "out/evil.sh", "sha256": sha, "size": evil.len(), "mode": 0o755}));
    std::fs::write(&key_file, planted.to_string()).unwrap();

    // The local entry is gone (expired, evicted); a run under the unsigned
    // profile imports the planted one (as documented for unsigned caches).
    rusqlite::Connection::open(env.sw_home().join("state.db"))
        .unwrap()
        .execute("DELETE FROM cache_entries", [])
        .unwrap();
    std::fs::remove_dir_all(env.dir().join("out")).unwrap();
    let out = run(&["run", "build", "--profile", "plain"]);
    expect_code(&out, 0);
    assert!(
        env.dir().join("out/evil.sh").exists(),
        "the unsigned profile trusts the bucket: {}",
        text(&out.stderr)
    );

    // It is not published again under the key (it names a local run, but
    // this machine did not produce it): the outbox is rebuilt and flushed.
    for f in ["outbox.db", "outbox.db-wal", "outbox.db-shm"] {
        let _ = std::fs::remove_file(env.sw_home().join(f));
    }
    expect_code(&run(&["sync", "flush", "--profile", "team"]), 0);
    let now = manifest_doc(&key_file);
    assert!(
        now.get("signature").is_none(),
        "the planted entry was signed and published: {now}"
    );

    // Nor is it a hit for the signing profile.
    std::fs::remove_dir_all(env.dir().join("out")).unwrap();
    let out = run(&["run", "build", "--profile", "team"]);
    expect_code(&out, 0);
    assert!(
        !env.dir().join("out/evil.sh").exists(),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("built"),
        "the job ran: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("it is not signed"),
        "{}",
        text(&out.stderr)
    );
}

/// A remote manifest document, decompressed.
fn manifest_doc(path: &std::path::Path) -> serde_json::Value {
    let body = std::fs::read(path).unwrap();
    serde_json::from_slice(&sparkwing::remote::pack::manifest_json(&body).unwrap()).unwrap()
}

/// Rewrites a manifest document to version 1: a blob per file, no packs.
fn as_version_1(doc: &mut serde_json::Value) {
    let m = &mut doc["manifest"];
    m["version"] = 1.into();
    m.as_object_mut().unwrap().remove("packs");
    for f in m["files"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("chunks");
    }
}
