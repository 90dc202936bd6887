//! A remote `run.json` (written by another machine, possibly hostile)
//! parses into the typed document or fails with a message; never panics.
//! What parses renders in `runs show` and `runs list` without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = "01KB4ZJ0Q1V6Y5N3G7T0M8D2XS";
    match sparkwing_sync::doc::parse_run(id, data) {
        Ok(doc) => {
            let doc = doc.to_value();
            let _ = sparkwing::remote::runs::render_show(&doc);
            let _ = sparkwing::remote::runs::render_list(&[doc], true);
        }
        Err(why) => {
            let _ = sparkwing::remote::runs::unreadable(id, &why);
        }
    }
});
