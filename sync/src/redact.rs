//! Redaction: the one function every user-visible string and every stored
//! error passes through (DESIGN invariant 8). URLs keep their scheme, host
//! and path; user information and query strings (passwords, presigned
//! signatures, SAS tokens) are masked, and so are `password=`, `token=`,
//! `secret=` and similar pairs outside URLs (libpq-style DSNs, messages).

/// A URL with its user information and query string masked:
/// `postgres://u:pw@db/x?sslmode=require` becomes `postgres://***@db/x?***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => return "[redacted]".into(),
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let host = match authority.rfind('@') {
        Some(i) => format!("***@{}", &authority[i + 1..]),
        None => authority.to_string(),
    };
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}?***", &tail[..i]),
        None => tail.to_string(),
    };
    format!("{scheme}{host}{tail}")
}

/// Masks the user information and the query string of every URL inside a
/// free text (errors from remotes quote the URLs they used):
/// `http://u:pw@h/x?token=t` becomes `http://***@h/x?***`.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // User information ends at the authority's last `@`. The authority
        // is read generously (a password may hold `)`, `'` or `]`, which
        // URL libraries leave unencoded): up to whitespace, `/`, `?` or `#`.
        let authority = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '<' | '>'))
            .unwrap_or(tail.len());
        let tail = match tail[..authority].rfind('@') {
            Some(at) => {
                out.push_str("***@");
                &tail[at + 1..]
            }
            None => tail,
        };
        // The rest of a URL in a text ends at whitespace, a double quote,
        // an angle bracket or a backtick. `)`, `]` and `'` may be part of
        // it (an IPv6 host, a path): ending there would leave the query
        // string after them unmasked, so prose after a URL may be masked
        // with it instead.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let redacted = redact_url(&format!("x://{}", &tail[..end]));
        out.push_str(redacted.strip_prefix("x://").unwrap_or(&redacted));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Headers whose value is a credential; a server's error may echo them
/// (S3's SignatureDoesNotMatch quotes the canonical request).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-amz-security-token",
    "x-amz-server-side-encryption-customer-key",
    "x-goog-api-key",
    "x-ms-copy-source-authorization",
];

/// `name: value` of a [`SECRET_HEADERS`] masked to the end of its line.
fn scrub_headers(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some((i, h)) = SECRET_HEADERS
        .iter()
        .filter_map(|h| lower[at..].find(&format!("{h}:")).map(|i| (at + i, *h)))
        .min_by_key(|(i, _)| *i)
    {
        let value = i + h.len() + 1;
        let end = text[value..]
            .find(['\n', '\r', '<'])
            .map_or(text.len(), |e| value + e);
        out.push_str(&text[at..value]);
        out.push_str(" ***");
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Environment variables whose values are credentials: if a value shows up
/// in any text (echoed by a server, quoted in an error), it is masked.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "SPARKWING_PG_URL",
];

fn scrub_env_values(text: &str) -> String {
    static VALUES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let values = VALUES.get_or_init(|| {
        SECRET_VARS
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .filter(|v| v.len() >= 8)
            .collect()
    });
    let mut out = text.to_string();
    for v in values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// Keys whose `key=value` is masked outside URLs too.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "sig",
    "signature",
    "access_key",
    "secret_key",
    "api_key",
    "apikey",
    "sas",
];

/// [`scrub_urls`], then every `key=value` whose key names a secret masked.
pub fn scrub(text: &str) -> String {
    let text = scrub_env_values(&scrub_headers(&scrub_urls(text)));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find('=') {
        let (head, tail) = rest.split_at(i);
        let key_start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |k| k + 1);
        let key = &head[key_start..];
        out.push_str(head);
        out.push('=');
        let tail = &tail[1..];
        let lower = key.to_ascii_lowercase();
        if SECRET_KEYS.iter().any(|k| {
            lower == *k || lower.ends_with(&format!("_{k}")) || lower.ends_with(&format!("-{k}"))
        }) {
            let end = tail
                .find(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | '\'' | '&' | ';' | ',' | ')')
                })
                .unwrap_or(tail.len());
            if end > 0 && &tail[..end] != "***" {
                out.push_str("***");
            } else {
                out.push_str(&tail[..end]);
            }
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_inside_text_are_scrubbed() {
        assert_eq!(
            scrub_urls("PUT http://key:secret@minio:9000/b/k failed; see https://docs.example/x"),
            "PUT http://***@minio:9000/b/k failed; see https://docs.example/x"
        );
        assert_eq!(scrub_urls("no url here"), "no url here");
        // Query strings carry tokens (presigned URLs, SAS tokens).
        assert_eq!(
            scrub_urls("GET http://u:p@h:9/b/k?token=QSECRET&x=1 (503) then \"https://h/?sig=S2\""),
            "GET http://***@h:9/b/k?*** (503) then \"https://h/?***\""
        );
        assert_eq!(scrub_urls("http://h?token=T"), "http://h?***");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://user:pw@db.example:5432/sw?sslmode=require&password=x"),
            "postgres://***@db.example:5432/sw?***"
        );
        assert_eq!(
            redact_url("https://api.example.dev/v1"),
            "https://api.example.dev/v1"
        );
        assert_eq!(redact_url("garbage secret"), "[redacted]");
    }
    #[test]
    fn passwords_with_brackets_and_quotes_are_masked_whole() {
        for url in [
            "http://alice:SEKRIT)PASSWD@127.0.0.1:9/?token=Q",
            "http://alice:SEK'APOS'PASS@h/x",
            "(see http://u:p]w@h)",
            "http://u:a@b@h/",
        ] {
            let got = scrub(&format!("GET {url} failed"));
            for secret in ["SEKRIT", "PASSWD", "APOS", "PASS", "p]w", "a@b"] {
                assert!(!got.contains(secret), "{got}");
            }
            assert!(got.contains("***@"), "{got}");
        }
        assert_eq!(scrub_urls("(http://h/x)"), "(http://h/x)");
    }

    #[test]
    fn ipv6_hosts_paths_with_brackets_and_echoed_headers_are_masked() {
        for text in [
            "GET http://[::1]:9/?X-Amz-Security-Token=PLANTEDQ2 failed",
            "GET http://127.0.0.1:9/a)b/?auth=PLANTEDQ2 failed",
            "GET http://127.0.0.1:9/a'b?code=PLANTEDQ2 failed",
            "X-Amz-Security-Token=PLANTEDQ2",
            "<CanonicalRequest>GET\n/b/k\nhost:h\nx-amz-security-token:PLANTEDQ2\n</CanonicalRequest>",
            "Authorization: AWS4-HMAC-SHA256 Credential=PLANTEDQ2/x",
        ] {
            let got = scrub(text);
            assert!(!got.contains("PLANTEDQ2"), "{text:?} -> {got:?}");
        }
        assert_eq!(
            scrub("<Host>h</Host>\nx-amz-security-token:T\nx-amz-date:1"),
            "<Host>h</Host>\nx-amz-security-token: ***\nx-amz-date:1"
        );
    }

    #[test]
    fn secret_pairs_outside_urls_are_masked() {
        assert_eq!(
            scrub("host=db user=sw password=PW sslmode=require"),
            "host=db user=sw password=*** sslmode=require"
        );
        assert_eq!(
            scrub("AWS_SECRET_ACCESS_KEY=abc, x=1"),
            "AWS_SECRET_ACCESS_KEY=***, x=1"
        );
        assert_eq!(
            scrub("GET http://u:p@h/x?token=T"),
            "GET http://***@h/x?***"
        );
        assert_eq!(scrub("a == b; token="), "a == b; token=");
        assert_eq!(scrub("tokens=5 keyset=1"), "tokens=5 keyset=1");
    }
}
