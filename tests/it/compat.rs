//! Issue 12: what sparkwing wrote before its statuses, run documents and
//! remote boundary were typed still reads the same. The fixture
//! (`tests/fixtures/e0fb979/`, made by `make-e0fb979.sh` with the binary of
//! commit e0fb979) holds a SPARKWING_HOME and a filesystem remote after
//! three runs: `ok` (computed), `ok` again (restored from the cache) and
//! `bad` (a failed job and a skipped dependent), flushed. Its state.db is
//! at schema version 2, so opening it also migrates it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use sparkwing::local::store::Store;
use sparkwing::local::view::LocalView;
use sparkwing::status::{JobStatus, RunStatus, StepStatus};
use sparkwing_sync::view::RunRead;
use sparkwing_sync::{ObjectStoreTarget, ObjectView, RemoteView};

use crate::util::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e0fb979")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn typed_statuses(doc: &Value) {
    serde_json::from_value::<RunStatus>(doc["status"].clone())
        .unwrap_or_else(|e| panic!("run status {}: {e}", doc["status"]));
    for j in doc["jobs"].as_array().unwrap() {
        serde_json::from_value::<JobStatus>(j["status"].clone())
            .unwrap_or_else(|e| panic!("job status {}: {e}", j["status"]));
        for s in j["steps"].as_array().unwrap() {
            serde_json::from_value::<StepStatus>(s["status"].clone())
                .unwrap_or_else(|e| panic!("step status {}: {e}", s["status"]));
        }
    }
}

#[test]
fn a_home_and_a_remote_written_before_issue_12_read_the_same() {
    let env = Env::new();
    let home = env.sw_home();
    copy_dir(&fixture().join("home"), &home);
    let remote = env.dir().join("remote");
    copy_dir(&fixture().join("remote"), &remote);

    // The CLI over the old state.db: every status as it was written.
    let list = env.json(&["runs", "list", "-o", "json"]);
    let rows = list.as_array().expect("a list");
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["pipeline"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("bad", "failed"), ("ok", "success"), ("ok", "success")]
    );
    let id = |i: usize| rows[i]["id"].as_str().unwrap().to_string();
    let (bad, ok2, ok1) = (id(0), id(1), id(2));
    let show = |run: &str| env.json(&["runs", "show", run, "-o", "json"]);
    let job = |doc: &Value, name: &str| -> Value {
        doc["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no job {name} in {doc}"))
    };
    let doc = show(&bad);
    assert_eq!(job(&doc, "lint")["status"], "failed");
    assert_eq!(job(&doc, "lint")["steps"][0]["exit_code"], 3);
    assert_eq!(job(&doc, "ship")["status"], "skipped");
    assert_eq!(job(&doc, "ship")["steps"][0]["status"], "skipped");
    let doc = show(&ok2);
    assert_eq!(job(&doc, "build")["status"], "cached");
    assert_eq!(job(&doc, "build")["cached_from_run"], ok1.as_str());
    assert_eq!(job(&doc, "talk")["status"], "success");
    let out = env.run(&["runs", "logs", &bad, "--job", "lint"]);
    expect_code(&out, 0);
    assert_eq!(text(&out.stdout), "linting\n");

    // The old run.json files, read through the object view, equal what
    // today's code derives from the old state.db (the local view), and
    // every status in them is one the types know.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(Store::open(&home).unwrap());
    let local = LocalView::new(Arc::clone(&store), &home);
    let objects = ObjectView::new(Arc::new(ObjectStoreTarget::filesystem(
        remote.join("state"),
    )));
    let logs = ObjectView::new(Arc::new(ObjectStoreTarget::filesystem(remote.join("logs"))));
    rt.block_on(async {
        assert_eq!(
            objects.run_ids().await.unwrap(),
            vec![ok1.clone(), ok2.clone(), bad.clone()]
        );
        for run in [&ok1, &ok2, &bad] {
            let remote_doc = match objects.run(run).await.unwrap() {
                Some(RunRead::Doc(d)) => d.to_value(),
                other => panic!("{run}: {other:?}"),
            };
            let mut local_doc = match local.run(run).await.unwrap() {
                Some(RunRead::Doc(d)) => d.to_value(),
                other => panic!("{run}: {other:?}"),
            };
            // That release's run.json did not count log chunks yet (its
            // state.db had no log_chunks table): the fields are absent, and
            // everything else is equal.
            for j in local_doc["jobs"].as_array_mut().unwrap() {
                let j = j.as_object_mut().unwrap();
                assert_eq!(j.remove("log_chunks"), Some(Value::from(0)));
                assert_eq!(j.remove("log_bytes"), Some(Value::from(0)));
            }
            assert_eq!(remote_doc, local_doc, "{run}: the old run.json");
            typed_statuses(&remote_doc);
            assert_eq!(
                objects.events(run).await.unwrap().flatten(),
                local.events(run).await.unwrap().flatten(),
                "{run}: the old event segments"
            );
            // Its logs: the chunks it wrote are, in order, the local log.
            for job in remote_doc["jobs"].as_array().unwrap() {
                let name = job["name"].as_str().unwrap();
                let chunks = logs.log_chunks(run, name).await.unwrap();
                let mut log = Vec::new();
                for seq in chunks.seqs {
                    log.extend(logs.log_chunk(run, name, seq).await.unwrap().unwrap());
                }
                let file = sparkwing::run::logs::log_path(&home, run, name);
                assert_eq!(
                    log,
                    std::fs::read(&file).unwrap_or_default(),
                    "{run}/{name}"
                );
            }
        }
    });

    // And the old home takes new runs beside the old ones.
    env.write_project(
        "pipelines:\n  - name: hello\n    jobs:\n      greet:\n        steps: [{ run: echo hi }]\n",
    );
    let out = env.run(&["run", "hello"]);
    expect_code(&out, 0);
    let list = env.json(&["runs", "list", "-o", "json"]);
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_eq!(list[0]["status"], "success");
}
