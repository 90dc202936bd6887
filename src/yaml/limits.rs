//! Limits a YAML document must meet before serde loads it: size, nesting
//! depth, and how much its aliases expand.
//!
//! serde_norway hands the whole text to libyaml and collects every event of
//! a document before deserializing anything. libyaml's scanner is
//! quadratic in flow nesting (`[[[[…` or `{a: {a: …` costs seconds to
//! minutes at 100,000 levels), and serde_norway follows aliases without a
//! bound on what they expand to (an anchored list of 30,000 steps aliased
//! by 30,000 jobs is 900 million steps). Its own recursion limit (128) only
//! applies once that work is done.
//!
//! So [`check`] pulls the same parser's events one at a time and stops at
//! the first event past a limit: only what precedes it is ever scanned,
//! and a 100,000-deep document is rejected after 65 levels. Using libyaml
//! itself, rather than a hand-written scan of brackets and indentation,
//! means the check sees exactly the structure serde will see: a `[` inside
//! a quoted string, a comment or a block scalar never counts, and no
//! quoting trick can hide nesting from it.

use std::ffi::CStr;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::path::Path;

use unsafe_libyaml_norway as unsafe_yaml;

/// The largest YAML file sparkwing reads (pipeline and profile files): 1 MiB.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The deepest nesting of sequences and mappings a document may have.
pub const MAX_DEPTH: usize = 64;

/// How many nodes a document's aliases may add, in total, when expanded.
/// A document without aliases adds none, whatever its size.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Reads a YAML file as text: at most [`MAX_FILE_BYTES`], valid UTF-8.
/// Errors do not repeat the path; callers add it with the place it came
/// from.
pub fn read_file(path: &Path) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_BYTES {
        // InvalidData, not FileTooLarge: this is the user's input being
        // refused (exit 2), not a file sparkwing could not write (exit 74).
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file is larger than the {} limit", mib(MAX_FILE_BYTES)),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

/// Checks `text` (the contents of `path`) against every limit, before any
/// of it is loaded. A syntax error is left for serde to report: libyaml
/// stops at the same place there.
pub(super) fn check(path: &Path, text: &str) -> Result<(), String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: {} bytes is more than the {} limit for a YAML file",
            path.display(),
            text.len(),
            mib(MAX_FILE_BYTES)
        ));
    }
    scan(text).map_err(|v| format!("{}:{}:{}: {}", path.display(), v.line, v.column, v.msg))
}

/// A limit crossed, at a 1-based line and column (as serde reports them).
#[derive(Debug)]
struct Violation {
    line: u64,
    column: u64,
    msg: String,
}

fn scan(text: &str) -> Result<(), Violation> {
    let Some(mut events) = Events::new(text) else {
        return Ok(());
    };
    let mut doc = Document::default();
    while let Some((event, mark)) = events.next() {
        let at = |msg: String| Violation {
            line: mark.line + 1,
            column: mark.column + 1,
            msg,
        };
        match event {
            Event::DocumentStart => doc = Document::default(),
            Event::Scalar(anchor) => doc.scalar(anchor),
            Event::Start(anchor) => {
                doc.start(anchor);
                if doc.open.len() > MAX_DEPTH {
                    return Err(at(format!(
                        "nesting deeper than {MAX_DEPTH} levels; sparkwing's YAML files are never nested this deep"
                    )));
                }
            }
            Event::End => doc.end(),
            Event::Alias(name) => doc.alias(&name).map_err(at)?,
            Event::StreamEnd => break,
        }
    }
    Ok(())
}

/// What one document's aliases cost so far. Anchors are per document and
/// a later anchor of the same name replaces the earlier one, as in
/// serde_norway's loader.
#[derive(Default)]
struct Document {
    /// Nodes loaded so far, each alias counted as the nodes it expands to.
    nodes: usize,
    /// Nodes added by aliases so far.
    aliased: usize,
    /// The collections open, innermost last: their anchor and `nodes`
    /// before they started.
    open: Vec<(Option<usize>, usize)>,
    /// The current anchor of each name.
    names: std::collections::HashMap<Vec<u8>, usize>,
    /// Each anchored node's expanded size; `None` while it is still open.
    sizes: Vec<Option<usize>>,
}

impl Document {
    fn define(&mut self, name: Vec<u8>, size: Option<usize>) -> usize {
        self.sizes.push(size);
        let id = self.sizes.len() - 1;
        self.names.insert(name, id);
        id
    }

    fn scalar(&mut self, anchor: Option<Vec<u8>>) {
        self.nodes = self.nodes.saturating_add(1);
        if let Some(name) = anchor {
            self.define(name, Some(1));
        }
    }

    fn start(&mut self, anchor: Option<Vec<u8>>) {
        let id = anchor.map(|name| self.define(name, None));
        self.open.push((id, self.nodes));
        self.nodes = self.nodes.saturating_add(1);
    }

    fn end(&mut self) {
        if let Some((Some(id), before)) = self.open.pop() {
            self.sizes[id] = Some(self.nodes - before);
        }
    }

    fn alias(&mut self, name: &[u8]) -> Result<(), String> {
        let shown = String::from_utf8_lossy(name);
        let size = match self.names.get(name).map(|&id| self.sizes[id]) {
            Some(Some(size)) => size,
            Some(None) => {
                return Err(format!(
                    "alias *{shown} is inside the node it refers to; an alias may only repeat a node that has ended"
                ))
            }
            // Unknown: serde reports it.
            None => 1,
        };
        self.nodes = self.nodes.saturating_add(size);
        self.aliased = self.aliased.saturating_add(size);
        if self.aliased > MAX_ALIAS_NODES {
            return Err(format!(
                "aliases expand to more than {MAX_ALIAS_NODES} nodes (at alias *{shown}); write the repeated parts out or use fewer aliases"
            ));
        }
        Ok(())
    }
}

/// The little of an event the limits need.
enum Event {
    DocumentStart,
    StreamEnd,
    /// A sequence or a mapping starts, with its anchor.
    Start(Option<Vec<u8>>),
    End,
    Scalar(Option<Vec<u8>>),
    Alias(Vec<u8>),
}

/// libyaml's event parser over a borrowed text, one event at a time.
///
/// Safety: the parser state is boxed so that it never moves after
/// `yaml_parser_initialize` (it holds pointers into itself and into
/// `text`), `text` outlives it (`'a`), every event is deleted once its
/// anchor is copied out, the parser is never called again after it failed
/// or ended the stream, and it is deleted exactly once, on drop.
struct Events<'a> {
    parser: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    done: bool,
    _text: PhantomData<&'a str>,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Option<Events<'a>> {
        let mut parser = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let p = parser.as_mut_ptr();
        // SAFETY: `p` points to writable memory for a parser; initialize
        // fills it in. Only when it succeeds is it used and later deleted.
        unsafe {
            if unsafe_yaml::yaml_parser_initialize(p).fail {
                return None;
            }
            unsafe_yaml::yaml_parser_set_encoding(p, unsafe_yaml::YAML_UTF8_ENCODING);
            unsafe_yaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
        }
        Some(Events {
            parser,
            done: false,
            _text: PhantomData,
        })
    }

    /// The next event and where it starts; `None` at the end of the stream
    /// or at a syntax error.
    fn next(&mut self) -> Option<(Event, unsafe_yaml::yaml_mark_t)> {
        while !self.done {
            let mut raw = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
            // SAFETY: the parser was initialized (see `new`) and has
            // neither failed nor ended. A successful parse fills `raw`; its
            // anchor pointers are NUL-terminated strings owned by the
            // event, copied before `yaml_event_delete` frees them.
            let (event, mark) = unsafe {
                if unsafe_yaml::yaml_parser_parse(self.parser.as_mut_ptr(), raw.as_mut_ptr()).fail {
                    self.done = true;
                    return None;
                }
                let e = raw.as_mut_ptr();
                let anchor = |ptr: *mut u8| -> Option<Vec<u8>> {
                    (!ptr.is_null()).then(|| CStr::from_ptr(ptr.cast()).to_bytes().to_vec())
                };
                let event = match (*e).type_ {
                    unsafe_yaml::YAML_DOCUMENT_START_EVENT => Some(Event::DocumentStart),
                    unsafe_yaml::YAML_STREAM_END_EVENT => Some(Event::StreamEnd),
                    unsafe_yaml::YAML_SEQUENCE_START_EVENT => {
                        Some(Event::Start(anchor((*e).data.sequence_start.anchor)))
                    }
                    unsafe_yaml::YAML_MAPPING_START_EVENT => {
                        Some(Event::Start(anchor((*e).data.mapping_start.anchor)))
                    }
                    unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                        Some(Event::End)
                    }
                    unsafe_yaml::YAML_SCALAR_EVENT => {
                        Some(Event::Scalar(anchor((*e).data.scalar.anchor)))
                    }
                    unsafe_yaml::YAML_ALIAS_EVENT => {
                        anchor((*e).data.alias.anchor).map(Event::Alias)
                    }
                    // Stream start and document end: nothing to count.
                    _ => None,
                };
                let mark = (*e).start_mark;
                unsafe_yaml::yaml_event_delete(e);
                (event, mark)
            };
            if let Some(event) = event {
                self.done = matches!(event, Event::StreamEnd);
                return Some((event, mark));
            }
        }
        None
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: only an initialized parser is ever wrapped (see `new`).
        unsafe { unsafe_yaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        super::check(Path::new("f.yaml"), text)
    }

    #[test]
    fn deep_flow_nesting_is_rejected_where_it_crosses_the_limit() {
        let e = check(&"[".repeat(100_000)).unwrap_err();
        assert_eq!(
            e,
            "f.yaml:1:65: nesting deeper than 64 levels; sparkwing's YAML files are never nested this deep"
        );
        let e = check(&"{a: ".repeat(50_000)).unwrap_err();
        assert!(
            e.starts_with("f.yaml:1:257: nesting deeper than 64 levels"),
            "{e}"
        );
        // Closed, on many lines, mappings in sequences: the same limit.
        let closed = format!("{}{}", "[\n".repeat(65), "]".repeat(65));
        assert!(check(&closed)
            .unwrap_err()
            .starts_with("f.yaml:65:1: nesting deeper"));
        assert!(check(&"- ".repeat(100_000))
            .unwrap_err()
            .contains("deeper than 64"));
    }

    #[test]
    fn deep_block_nesting_is_rejected() {
        let mut text = String::new();
        for i in 0..1400 {
            text.push_str(&" ".repeat(i));
            text.push_str("a:\n");
        }
        let e = check(&text).unwrap_err();
        assert!(e.starts_with("f.yaml:65:65: nesting deeper than 64"), "{e}");
    }

    #[test]
    fn sixty_four_levels_and_brackets_in_text_pass() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        check(&ok).unwrap();
        // Brackets that are not structure: in quotes, comments, block
        // scalars and plain scalars.
        let deep = "[".repeat(200);
        let text = format!(
            "a: '{deep}'\nb: \"{deep}\"\n# {deep}\nc: |\n  {deep}\n  {{{{{{\nd: >-\n  {deep}\ne: echo {deep}\nf: [\"{deep}\", '{deep}']\n"
        );
        check(&text).unwrap();
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // Billion laughs.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
        }
        let e = check(&text).unwrap_err();
        assert!(
            e.contains("aliases expand to more than 100000 nodes"),
            "{e}"
        );
        assert!(e.starts_with("f.yaml:"), "{e}");

        // One large anchored list repeated many times.
        let text = format!(
            "steps: &s [{}]\njobs: [{}]\n",
            "{run: x}, ".repeat(20_000),
            "*s, ".repeat(10)
        );
        assert!(check(&text).unwrap_err().contains("aliases expand"));

        // An alias inside the node it names.
        let e = check("a: &a [1, *a]\n").unwrap_err();
        assert!(
            e.contains("alias *a is inside the node it refers to"),
            "{e}"
        );
        // A later anchor of the same name replaces it.
        check("a: &a [&a 1, *a]\n").unwrap();
    }

    #[test]
    fn ordinary_aliases_pass() {
        let text = "base: &env {A: 1, B: 2}\njobs:\n  a: {env: *env}\n  b: {env: *env}\n";
        check(text).unwrap();
        // A large file without aliases is not limited by node count.
        check(&format!("x: [{}]\n", "a, ".repeat(300_000))).unwrap();
    }

    #[test]
    fn size_is_capped() {
        let e = check(&format!("#{}", "x".repeat(MAX_FILE_BYTES))).unwrap_err();
        assert!(
            e.starts_with("f.yaml: 1048577 bytes is more than the 1 MiB limit"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES + 1]).unwrap();
        let e = read_file(&big).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than the 1 MiB limit"), "{e}");
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, b"a: \xff\xfe\x00").unwrap();
        let e = read_file(&bin).unwrap_err();
        assert!(
            e.to_string()
                .contains("not UTF-8 text (invalid byte at offset 3)"),
            "{e}"
        );
        std::fs::write(&bin, vec![b'#'; MAX_FILE_BYTES]).unwrap();
        assert_eq!(read_file(&bin).unwrap().len(), MAX_FILE_BYTES);
    }

    #[test]
    fn syntax_errors_are_left_to_serde() {
        check("a: [1, 2\nb: }").unwrap();
        check("{a:{a:{a:").unwrap();
    }
}
