//! Profile selection, validation and redaction, through the binary.

use crate::util::*;

const HELLO: &str = "pipelines:\n  - name: hello\n    jobs: {greet: {steps: [{run: echo hi}]}}\n";

fn profile_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["profile", "-o", "json"];
    a.extend_from_slice(args);
    env.json(&a)
}

#[test]
fn builtin_laptop_applies_without_configuration_and_environment_never_selects() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles("profiles:\n  shared:\n    cache: { type: s3, bucket: bkt }\n");
    let v = profile_json(&env, &[]);
    assert_eq!(v["name"], "laptop");
    assert_eq!(v["source"], "builtin");
    assert_eq!(v["mode"], 1);
    // A SPARKWING_PROFILE variable is not a selection mechanism.
    let out = env
        .cmd(&["profile", "-o", "json"])
        .env("SPARKWING_PROFILE", "shared")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "laptop");
    expect_code(
        &env.cmd(&["run", "hello"])
            .env("SPARKWING_PROFILE", "shared")
            .output()
            .unwrap(),
        0,
    );
}

#[test]
fn selection_order_flag_then_pipeline_then_project_default() {
    let env = Env::with_pipelines(
        r#"
defaults:
  profile: proj-default
profiles:
  proj-default: { state: { type: sqlite } }
  for-pipeline: { state: { type: sqlite } }
  both: { cache: { type: gcs, bucket: from-project } }
pipelines:
  - name: plain
    jobs: {a: {steps: [{run: 'true'}]}}
  - name: pinned
    profile: for-pipeline
    jobs: {a: {steps: [{run: 'true'}]}}
"#,
    );
    env.write_user_profiles("profiles:\n  both: { cache: { type: s3, bucket: from-user } }\n  mine: { state: { type: sqlite } }\n");
    let v = profile_json(&env, &["--pipeline", "plain"]);
    assert_eq!(
        (v["name"].as_str(), v["source"].as_str()),
        (Some("proj-default"), Some("project-default"))
    );
    let v = profile_json(&env, &["--pipeline", "pinned"]);
    assert_eq!(
        (v["name"].as_str(), v["source"].as_str()),
        (Some("for-pipeline"), Some("pipeline"))
    );
    let v = profile_json(&env, &["--pipeline", "pinned", "--profile", "mine"]);
    assert_eq!(
        (v["name"].as_str(), v["source"].as_str()),
        (Some("mine"), Some("flag"))
    );
    assert_eq!(v["defined_in"]["kind"], "user");
    // The user file wins over the project for the same name.
    let v = profile_json(&env, &["--profile", "both"]);
    assert_eq!(v["surfaces"]["cache"]["bucket"], "from-user");
    assert!(v["considered"]
        .to_string()
        .contains("user file's definition wins"));
    // A sqlite-only project profile runs.
    let out = env.run(&["run", "pinned"]);
    expect_code(&out, 0);
    assert_eq!(
        env.json(&["runs", "list", "-o", "json"])[0]["profile"],
        "for-pipeline"
    );
}

#[test]
fn profile_file_path_overrides() {
    let env = Env::with_pipelines(HELLO);
    let custom = env.home.path().join("elsewhere.yaml");
    std::fs::write(&custom, "profiles:\n  alt: { state: { type: sqlite } }\n").unwrap();
    let out = env
        .cmd(&["profile", "-o", "json", "--profile", "alt"])
        .env("SPARKWING_PROFILES", &custom)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let xdg = env.home.path().join("xdg");
    std::fs::create_dir_all(xdg.join("sparkwing")).unwrap();
    std::fs::write(
        xdg.join("sparkwing/profiles.yaml"),
        "profiles:\n  x: { state: { type: sqlite } }\n",
    )
    .unwrap();
    let out = env
        .cmd(&["profile", "-o", "json", "--profile", "x"])
        .env("XDG_CONFIG_HOME", &xdg)
        .output()
        .unwrap();
    expect_code(&out, 0);
    // An explicit path that does not exist is an error, not a silent default.
    let out = env
        .cmd(&["run", "hello"])
        .env("SPARKWING_PROFILES", env.home.path().join("nope.yaml"))
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("SPARKWING_PROFILES"),
        "{}",
        text(&out.stderr)
    );
}

/// Each broken profile file, and the words its error must contain.
#[test]
fn every_profile_error_is_clear_and_stops_before_running() {
    let cases: &[(&str, &[&str])] = &[
        ("profiles:\n  p:\n    state: { type: mysql }\n", &["profiles.yaml:3:", "unknown variant `mysql`"]),
        ("profiles:\n  p:\n    stat: { type: sqlite }\n", &["profiles.yaml:3:", "unknown field `stat`"]),
        ("profiles:\n  p:\n    cache: { type: s3 }\n", &["profile \"p\"", "needs `bucket:`"]),
        ("profiles:\n  p:\n    cache: { type: gcs, bucket: '' }\n", &["needs `bucket:`"]),
        ("profiles:\n  p:\n    logs: { type: azure-blob }\n", &["needs `bucket:`"]),
        ("profiles:\n  p:\n    logs: { type: filesystem }\n", &["needs `path:`"]),
        ("profiles:\n  p:\n    logs: { type: filesystem, path: rel/dir }\n", &["must be absolute"]),
        ("profiles:\n  p:\n    state: { type: postgres }\n", &["url_source: env:VAR"]),
        ("profiles:\n  p:\n    state: { type: postgres, url: 'postgres://a', url_source: 'env:X' }\n", &["exactly one of `url` or `url_source`"]),
        ("profiles:\n  p:\n    state: { type: postgres, url_source: 'vault:x' }\n", &["write `url_source: env:VAR`"]),
        ("profiles:\n  p:\n    state: { type: postgres, url: 'mysql://x' }\n", &["postgres://"]),
        ("profiles:\n  p:\n    cache: { type: sqlite }\n", &["holds run state only"]),
        ("profiles:\n  p:\n    state: { type: s3, bucket: bkt, path: /x }\n", &["`path` does not apply to type s3"]),
        ("profiles:\n  p:\n    controller: { url: 'https://c' }\n", &["missing field `token`"]),
        ("profiles:\n  p:\n    controller: { url: 'c.example', token: t }\n", &["https://"]),
        ("profiles:\n  p:\n    controller: { url: 'https://c', token: t }\n    state: { type: sqlite }\n", &["remove state:"]),
        ("profiles:\n  p: {}\n", &["the profile is empty"]),
        ("profiles:\n  p: { state: { type: sqlite } }\n  p: { state: { type: sqlite } }\n", &["duplicate key `p`"]),
        ("profiles: [\n", &["profiles.yaml:"]),
        // Issue 10: names and endpoints are checked when the profile loads,
        // not retried against the remote forever.
        ("profiles:\n  p:\n    cache: { type: s3, bucket: '../../x' }\n", &["profiles.yaml: profile \"p\": cache.bucket \"../../x\" is not a valid S3 bucket name", "fix `bucket:`"]),
        ("profiles:\n  p:\n    logs: { type: gcs, bucket: Team_Logs }\n", &["logs.bucket \"Team_Logs\" is not a valid GCS bucket name: it has uppercase letters"]),
        ("profiles:\n  p:\n    logs: { type: azure-blob, bucket: 'my--logs', account: a }\n", &["logs.bucket \"my--logs\" is not a valid Azure container name"]),
        ("profiles:\n  p:\n    cache: { type: s3, bucket: bkt, endpoint: '::::' }\n", &["profile \"p\": cache.endpoint", "is not an http(s) URL with a host", "fix `endpoint:`"]),
        ("profiles:\n  p:\n    cache: { type: s3, bucket: bkt, endpoint: 'http://key:s3cr3t@minio:9000x' }\n", &["cache.endpoint (value not shown) is not an http(s) URL", "it carries user information"]),
        ("profiles:\n  p:\n    cache: { type: s3, bucket: bkt, endpoint: 'http://minio:9000x/?sig=s3cr3t' }\n", &["cache.endpoint \"http://minio:9000x/?***\" is not an http(s) URL"]),
        ("profiles:\n  p:\n    state: { type: s3, bucket: bkt, prefix: '../state' }\n", &["state.prefix \"../state\" is not a valid prefix"]),
        // Hostile documents are refused before they are loaded.
        (&format!("profiles: {}", "{a: ".repeat(50_000)), &["profiles.yaml:1:", "nesting deeper than 64 levels"]),
    ];
    for (yaml, wants) in cases {
        let env = Env::with_pipelines(HELLO);
        env.write_user_profiles(yaml);
        let out = env.run(&["run", "hello", "--profile", "p"]);
        expect_code(&out, 2);
        let e = text(&out.stderr);
        for w in *wants {
            assert!(
                e.contains(w),
                "profile file {yaml:?}: stderr lacks {w:?}: {e}"
            );
        }
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(
            !env.sw_home().join("state.db").exists(),
            "nothing ran for {yaml:?}"
        );
    }
}

#[test]
fn unknown_profile_names_the_known_ones() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles("profiles:\n  team: { state: { type: sqlite } }\n");
    let out = env.run(&["run", "hello", "--profile", "tema"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("profile \"tema\"") && e.contains("team") && e.contains("laptop"),
        "{e}"
    );
}

#[test]
fn recognized_types_this_build_cannot_run_fail_at_run_start() {
    let cases = [
        (
            "state: { type: postgres, url: 'postgres://u:pw@db/x' }",
            "type postgres is recognized but not implemented in this build",
        ),
        (
            "controller: { url: 'https://c.example', token: swu_secret }",
            "type controller is recognized but not implemented in this build",
        ),
    ];
    for (surface, want) in cases {
        let env = Env::with_pipelines(HELLO);
        env.write_user_profiles(&format!("profiles:\n  p:\n    {surface}\n"));
        let out = env.run(&["run", "hello", "--profile", "p"]);
        expect_code(&out, 2);
        let e = text(&out.stderr);
        assert!(e.contains(want), "{surface}: {e}");
        assert!(
            !e.contains("pw@") && !e.contains("swu_secret"),
            "no secret in errors: {e}"
        );
        assert!(!text(&out.stdout).contains("hi"), "never a silent fallback");
        // --sw-local-only (or the env var) pins the run locally instead.
        expect_code(
            &env.run(&["run", "hello", "--profile", "p", "--sw-local-only"]),
            0,
        );
        let out = env
            .cmd(&["run", "hello", "--profile", "p"])
            .env("SPARKWING_LOCAL_ONLY", "1")
            .output()
            .unwrap();
        expect_code(&out, 0);
    }
}

#[test]
fn an_unset_url_source_variable_is_named() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles(
        "profiles:\n  db:\n    state: { type: postgres, url_source: 'env:SPARKWING_PG_URL' }\n",
    );
    let out = env.run(&["run", "hello", "--profile", "db"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("state.url_source env:SPARKWING_PG_URL is unset"),
        "{e}"
    );
    let v = profile_json(&env, &["--profile", "db"]);
    assert_eq!(v["surfaces"]["state"]["url_source_set"], false);
    assert_eq!(v["mode"], 3);
}

#[test]
fn secrets_are_redacted_in_profile_output() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles(
        "profiles:\n  db:\n    state: { type: postgres, url: 'postgres://admin:hunter2@db.example:5432/sw?sslmode=require&password=hunter3' }\n    cache: { type: s3, bucket: bkt, endpoint: 'http://minio:9000/?sig=s3cr3t' }\n  ctl:\n    controller: { url: 'https://api.example.dev', token: swu_topsecret }\n",
    );
    for name in ["db", "ctl"] {
        for fmt in ["text", "json"] {
            let out = env.run(&["profile", "--profile", name, "-o", fmt]);
            expect_code(&out, 0);
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            for secret in ["hunter2", "hunter3", "s3cr3t", "swu_topsecret", "admin"] {
                assert!(!all.contains(secret), "{name}/{fmt} leaks {secret}: {all}");
            }
        }
    }
    let v = profile_json(&env, &["--profile", "db"]);
    assert_eq!(
        v["surfaces"]["state"]["url"],
        "postgres://***@db.example:5432/sw?***"
    );
    let v = profile_json(&env, &["--profile", "ctl"]);
    assert_eq!(v["surfaces"]["controller"]["token"], "[redacted]");
    assert_eq!(v["mode"], 4);
    // User information in an endpoint is refused, without showing it.
    env.write_user_profiles(
        "profiles:\n  db:\n    cache: { type: s3, bucket: bkt, endpoint: 'http://key:s3cr3t@minio:9000' }\n",
    );
    let out = env.run(&["profile", "--profile", "db"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("user information") && !e.contains("s3cr3t") && !e.contains("key:"),
        "{e}"
    );
}

#[test]
fn local_only_reports_what_it_overrides() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles("profiles:\n  shared: { cache: { type: s3, bucket: bkt } }\n");
    let v = profile_json(&env, &["--profile", "shared", "--sw-local-only"]);
    assert_eq!(v["name"], "laptop");
    assert_eq!(v["local_only"], "--sw-local-only");
    assert_eq!(v["would_resolve_to"]["name"], "shared");
    let out = env
        .cmd(&["profile", "--profile", "shared"])
        .env("SPARKWING_LOCAL_ONLY", "1")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("pinned"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn coordination_features_are_refused_in_mode_1_before_running() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: ship\n    jobs:\n      build: {steps: [{run: touch built}]}\n      deploy:\n        needs: [build]\n        approval: { message: 'Ship it?' }\n        steps: [{run: 'true'}]\n",
    );
    let out = env.run(&["run", "ship"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("approval") && e.contains("Mode 1") && e.contains("Postgres"),
        "{e}"
    );
    assert!(!env.dir().join("built").exists());
}

/// Issue 10: a profile file that cannot be read is named with the variable
/// its path really came from; `$SPARKWING_PROFILES` only when it is set.
#[test]
fn an_unreadable_profile_file_names_where_its_path_came_from() {
    let env = Env::with_pipelines(HELLO);
    let binary = b"\x7fELF\x02\x01\x01\x00\xff\xfe profiles: {}";
    let default = env.write_user_profiles("");
    std::fs::write(&default, binary).unwrap();
    let xdg = env.home.path().join("xdg");
    std::fs::create_dir_all(xdg.join("sparkwing")).unwrap();
    std::fs::write(xdg.join("sparkwing/profiles.yaml"), binary).unwrap();
    let explicit = env.home.path().join("team.yaml");
    std::fs::write(&explicit, binary).unwrap();

    // (XDG_CONFIG_HOME, SPARKWING_PROFILES), the file read, how it is named.
    let xdg_file = xdg.join("sparkwing/profiles.yaml");
    let cases = [
        (None, None, &default, "(the default under $HOME/.config)"),
        (
            Some(&xdg),
            None,
            &xdg_file,
            "(the default under $XDG_CONFIG_HOME)",
        ),
        (
            Some(&xdg),
            Some(&explicit),
            &explicit,
            "(from $SPARKWING_PROFILES)",
        ),
    ];
    for (xdg_var, profiles_var, path, origin) in cases {
        let mut cmd = env.cmd(&["run", "hello"]);
        if let Some(v) = xdg_var {
            cmd.env("XDG_CONFIG_HOME", v);
        }
        if let Some(v) = profiles_var {
            cmd.env("SPARKWING_PROFILES", v);
        }
        let out = cmd.output().unwrap();
        expect_code(&out, 2);
        let e = text(&out.stderr);
        assert!(
            e.contains(&format!(
                "reading profile file {} {origin}: the file is not UTF-8 text",
                path.display()
            )),
            "{origin}: {e}"
        );
        assert_eq!(
            e.contains("SPARKWING_PROFILES"),
            profiles_var.is_some(),
            "{origin}: {e}"
        );
    }

    // Over the size limit: refused without reading it all.
    std::fs::write(&default, vec![b'#'; 2 << 20]).unwrap();
    let out = env.run(&["run", "hello"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("larger than the 1 MiB limit") && e.contains("$HOME/.config"),
        "{e}"
    );
}

/// Issue 10: the project's own `profiles:` are checked the same way, and
/// the error names the project file.
#[test]
fn project_profiles_with_a_bad_bucket_name_the_project_file() {
    let env = Env::with_pipelines(&format!(
        "profiles:\n  shared: {{ cache: {{ type: s3, bucket: 'My_Bucket' }} }}\n{}",
        HELLO
    ));
    let out = env.run(&["run", "hello", "--profile", "shared"]);
    expect_code(&out, 2);
    let e = text(&out.stderr);
    assert!(
        e.contains("sparkwing.yaml: profile \"shared\": cache.bucket \"My_Bucket\" is not a valid S3 bucket name"),
        "{e}"
    );
    assert!(!env.sw_home().join("state.db").exists(), "nothing ran");
}

/// Issue 10: `SPARKWING_S3_ENDPOINT` is checked too, and named, without
/// showing its credentials.
#[test]
fn a_bad_s3_endpoint_variable_is_named() {
    let env = Env::with_pipelines(HELLO);
    env.write_user_profiles(
        "profiles:\n  shared: { cache: { type: s3, bucket: bkt, region: us-east-1 } }\n",
    );
    for bad in ["::::", "http://key:s3cr3t@minio:99999"] {
        let out = env
            .cmd(&["run", "hello", "--profile", "shared"])
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .env("SPARKWING_S3_ENDPOINT", bad)
            .output()
            .unwrap();
        expect_code(&out, 2);
        let e = text(&out.stderr);
        assert!(
            e.contains("SPARKWING_S3_ENDPOINT") && e.contains("is not an http(s) URL with a host"),
            "{bad}: {e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(!text(&out.stdout).contains("hi"), "nothing ran");
    }
}

/// `--sw-local-only` still resolves (to the local layout) when the
/// pipeline named is unknown, noting why the profile would not resolve;
/// without it, the unknown pipeline is the error.
#[test]
fn local_only_resolves_even_for_an_unknown_pipeline() {
    let env = Env::with_pipelines(
        "pipelines:\n  - name: work\n    jobs: {a: {steps: [{run: 'true'}]}}\n",
    );
    let out = env.run(&["profile", "--pipeline", "nosuch", "--sw-local-only"]);
    expect_code(&out, 0);
    assert!(
        text(&out.stdout).contains("pinned to the local layout"),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(&["profile", "--pipeline", "nosuch"]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("no pipeline `nosuch`"),
        "{}",
        text(&out.stderr)
    );
}
