//! The local cache: hits restore outputs without rerunning, keys follow
//! inputs, ttl and --sw-no-cache.

use std::os::unix::fs::PermissionsExt;

use crate::util::*;

const CACHED: &str = r#"
pipelines:
  - name: build
    jobs:
      compile:
        cache:
          key: [input.txt, "src/**"]
          outputs: [out]
        steps:
          - run: |
              n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count
              mkdir -p out/bin
              printf '\000\001\377binary' > out/data.bin
              cat input.txt > out/copy.txt
              printf '#!/bin/sh\necho tool\n' > out/bin/tool; chmod 750 out/bin/tool
      use:
        needs: [compile]
        steps:
          - run: ./out/bin/tool > used.txt
"#;

fn count(env: &Env) -> u32 {
    std::fs::read_to_string(env.dir().join("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn latest_id(env: &Env) -> String {
    env.json(&["runs", "list", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_hit_restores_deleted_outputs_byte_identical_without_rerunning() {
    let env = Env::with_pipelines(CACHED);
    std::fs::write(env.dir().join("input.txt"), "v1").unwrap();
    std::fs::create_dir(env.dir().join("src")).unwrap();
    std::fs::write(env.dir().join("src/main.c"), "int main;").unwrap();

    expect_code(&env.run(&["run", "build"]), 0);
    assert_eq!(count(&env), 1);
    let first = latest_id(&env);
    let data = std::fs::read(env.dir().join("out/data.bin")).unwrap();
    std::fs::remove_dir_all(env.dir().join("out")).unwrap();

    let out = env.run(&["run", "build"]);
    expect_code(&out, 0);
    assert_eq!(count(&env), 1, "the cached step did not run again");
    assert_eq!(std::fs::read(env.dir().join("out/data.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read_to_string(env.dir().join("out/copy.txt")).unwrap(),
        "v1"
    );
    let mode = std::fs::metadata(env.dir().join("out/bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "file modes are restored");
    let jobs = jobs_of(&env, "latest");
    assert_eq!(jobs["compile"]["status"], "cached");
    assert_eq!(jobs["compile"]["cached_from_run"], first.as_str());
    assert_eq!(
        jobs["use"]["status"], "success",
        "dependents of a cached job run"
    );
    assert!(text(&out.stderr).contains(&format!("restored from run {first}")));
    let show = text(&env.run(&["runs", "show", "latest"]).stdout);
    assert!(
        show.contains(&format!("restored from run {first}")),
        "{show}"
    );

    // A changed input misses.
    std::fs::write(env.dir().join("src/main.c"), "int main2;").unwrap();
    expect_code(&env.run(&["run", "build"]), 0);
    assert_eq!(count(&env), 2);

    // --sw-no-cache skips the read but still writes.
    expect_code(&env.run(&["run", "build", "--sw-no-cache"]), 0);
    assert_eq!(count(&env), 3);
    let writer = latest_id(&env);
    std::fs::remove_dir_all(env.dir().join("out")).unwrap();
    expect_code(&env.run(&["run", "build"]), 0);
    assert_eq!(count(&env), 3);
    assert_eq!(
        jobs_of(&env, "latest")["compile"]["cached_from_run"],
        writer.as_str()
    );
}

#[test]
fn an_expired_entry_is_recomputed() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: t\n    jobs:\n      j:\n        cache: {key: [], outputs: [o.txt], ttl: 1s}\n        steps:\n          - run: n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; echo x > o.txt\n",
    );
    expect_code(&env.run(&["run", "t"]), 0);
    expect_code(&env.run(&["run", "t"]), 0);
    assert_eq!(count(&env), 1, "within the ttl it hits");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    expect_code(&env.run(&["run", "t"]), 0);
    assert_eq!(count(&env), 2, "past the ttl it runs again");
}

#[test]
fn a_corrupt_blob_is_a_miss_not_a_restore() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: t\n    jobs:\n      j:\n        cache: {outputs: [o.txt]}\n        steps:\n          - run: n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; echo good > o.txt\n",
    );
    expect_code(&env.run(&["run", "t"]), 0);
    // Damage every blob in the store.
    for dir in std::fs::read_dir(env.sw_home().join("cas")).unwrap() {
        for blob in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = blob.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&p, "evil").unwrap();
        }
    }
    std::fs::remove_file(env.dir().join("o.txt")).unwrap();
    let out = env.run(&["run", "t"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stderr).contains("corrupt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(count(&env), 2);
    assert_eq!(
        std::fs::read_to_string(env.dir().join("o.txt")).unwrap(),
        "good\n"
    );
}

#[test]
fn a_missing_output_fails_the_job_by_name() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: t\n    jobs:\n      j:\n        cache: {outputs: [dist/app]}\n        steps:\n          - run: 'true'\n",
    );
    let out = env.run(&["run", "t"]);
    expect_code(&out, 1);
    assert!(
        text(&out.stderr).contains("cache output `dist/app` was not produced"),
        "{}",
        text(&out.stderr)
    );
}
