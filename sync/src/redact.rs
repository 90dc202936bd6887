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
        // The rest of a URL in a text ends at whitespace, a quote or a bracket.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(tail.len());
        let redacted = redact_url(&format!("x://{}", &tail[..end]));
        out.push_str(redacted.strip_prefix("x://").unwrap_or(&redacted));
        rest = &tail[end..];
    }
    out.push_str(rest);
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
    let text = scrub_urls(text);
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
        if SECRET_KEYS
            .iter()
            .any(|k| lower == *k || lower.ends_with(&format!("_{k}")))
        {
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
