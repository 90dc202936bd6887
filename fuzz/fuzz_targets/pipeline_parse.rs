//! `.sparkwing/sparkwing.yaml` parsing and validation never panics, and
//! whatever it accepts is a DAG whose `needs` all name jobs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = sparkwing::run::pipeline::parse_project(std::path::Path::new("fuzz.yaml"), text) {
        for p in &file.pipelines {
            for job in p.jobs.values() {
                assert!(job.needs.iter().all(|n| p.jobs.contains_key(n)));
                assert!(!job.steps.is_empty());
            }
            let _ = p.has_parallel_jobs();
        }
    }
});
