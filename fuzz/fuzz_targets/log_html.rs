//! Log bytes to HTML (the dashboard's renderer): never panics, and whatever
//! the bytes and however they are cut into chunks, the only markup in the
//! output is the renderer's own balanced `<span class="...">` tags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkwing::web::ansi::Renderer;

fn check(html: &str) {
    let mut rest = html;
    let mut depth = 0i32;
    while let Some(i) = rest.find('<') {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("<span class=\"") {
            let end = after.find("\">").expect("an unterminated span tag");
            let classes = &after[..end];
            assert!(
                classes.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' '),
                "class text {classes:?}"
            );
            depth += 1;
            rest = &after[end + 2..];
        } else if let Some(after) = tail.strip_prefix("</span>") {
            depth -= 1;
            assert!(depth >= 0, "a close without an open");
            rest = after;
        } else {
            panic!("markup that is not ours: {:?}", &tail[..tail.len().min(20)]);
        }
    }
    assert_eq!(depth, 0, "unbalanced spans in {html:?}");
    assert!(!html.contains('"') || html.matches('"').count() % 2 == 0);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, the rest is the log.
    let Some((&cut, log)) = data.split_first() else {
        return;
    };
    let size = (cut as usize % 17) + 1;
    let mut r = Renderer::new();
    for chunk in log.chunks(size) {
        check(&r.render(chunk));
    }
    check(&sparkwing::web::ansi::to_html(log));
});
