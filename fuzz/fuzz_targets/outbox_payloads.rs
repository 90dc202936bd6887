//! Every encoder/decoder of outbox payloads: an outbox entry's op, subject
//! and bytes into an `Op` (never a key outside the layout), event segments
//! (decode, re-encode, decode again: the same events), and cache manifests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkwing_sync::doc::{decode_events, Event};
use sparkwing_sync::Op;

fuzz_target!(|input: (u8, String, i64, Vec<u8>)| {
    let (which, subject, seq, body) = input;
    let op = ["state.event", "state.run", "log.chunk", "cache.blob", "cache.manifest", "other"][which as usize % 6];
    if let Ok(parsed) = Op::from_entry(op, &subject, seq, bytes::Bytes::from(body.clone())) {
        let key = parsed.key();
        assert!(!key.split('/').any(|seg| seg == ".." || seg == "." || seg.is_empty()), "{key}");
        assert!(!key.starts_with('/'));
        assert_eq!(parsed.body().as_ref(), body.as_slice());
    }
    if let Ok(events) = decode_events(&body) {
        let again: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        let back = decode_events(&again).expect("re-encoded events decode");
        assert_eq!(back.len(), events.len());
        for (a, b) in events.iter().zip(&back) {
            assert_eq!((a.seq, &a.kind, &a.job, &a.data), (b.seq, &b.kind, &b.job, &b.data));
        }
    }
    let _ = serde_json::from_slice::<sparkwing::run::cache::Manifest>(&body);
});
