//! What a bucket name, an endpoint and a prefix may be, checked when a
//! profile or a `--*-spec` flag is read, so that a typo fails at once
//! (exit 2) instead of being retried against the remote forever.
//!
//! Each check returns why the value is refused, without the value itself:
//! the caller names the file or flag, the field and the value (redacted
//! where it may hold a secret).

use super::SurfaceType;

/// Checks a bucket (S3, GCS) or container (Azure) name against the
/// provider's naming rules.
pub fn check_bucket(kind: SurfaceType, name: &str) -> Result<(), String> {
    match kind {
        SurfaceType::S3 => s3_bucket(name),
        SurfaceType::Gcs => gcs_bucket(name),
        SurfaceType::AzureBlob => azure_container(name),
        _ => Ok(()),
    }
}

const S3_RULE: &str = "S3 bucket names are 3-63 lowercase letters, digits, dots and hyphens, start and end with a letter or digit, and are not IP addresses";
const GCS_RULE: &str = "GCS bucket names are 3-63 lowercase letters, digits, hyphens, underscores and dots (222 with dots, 63 between dots), start and end with a letter or digit, and are not IP addresses";
const AZURE_RULE: &str = "Azure container names are 3-63 lowercase letters, digits and hyphens, start and end with a letter or digit, with no two hyphens together";

fn alnum(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn ip_like(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The first character of `name` not in `allowed`, described.
fn bad_char(name: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    name.chars().find(|&c| !allowed(c)).map(|c| {
        if c.is_ascii_uppercase() {
            "it has uppercase letters".to_string()
        } else if c.is_control() || c.is_whitespace() {
            "it has whitespace or control characters".to_string()
        } else {
            format!("`{c}` is not allowed")
        }
    })
}

fn refuse(what: &str, why: String, rule: &str) -> Result<(), String> {
    Err(format!("is not a valid {what}: {why}; {rule}"))
}

fn s3_bucket(name: &str) -> Result<(), String> {
    let what = "S3 bucket name";
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        return refuse(what, format!("it is {len} characters long"), S3_RULE);
    }
    if let Some(why) = bad_char(name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
    }) {
        return refuse(what, why, S3_RULE);
    }
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return refuse(
            what,
            "it starts or ends with a dot or a hyphen".into(),
            S3_RULE,
        );
    }
    if name.contains("..") {
        return refuse(what, "it has two dots together".into(), S3_RULE);
    }
    if ip_like(name) {
        return refuse(what, "it is written like an IP address".into(), S3_RULE);
    }
    Ok(())
}

fn gcs_bucket(name: &str) -> Result<(), String> {
    let what = "GCS bucket name";
    let len = name.chars().count();
    let max = if name.contains('.') { 222 } else { 63 };
    if !(3..=max).contains(&len) {
        return refuse(what, format!("it is {len} characters long"), GCS_RULE);
    }
    if let Some(why) = bad_char(name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
    }) {
        return refuse(what, why, GCS_RULE);
    }
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return refuse(
            what,
            "it starts or ends with a dot, a hyphen or an underscore".into(),
            GCS_RULE,
        );
    }
    if name
        .split('.')
        .any(|part| part.is_empty() || part.len() > 63)
    {
        return refuse(
            what,
            "a part between dots is empty or longer than 63".into(),
            GCS_RULE,
        );
    }
    if ip_like(name) {
        return refuse(what, "it is written like an IP address".into(), GCS_RULE);
    }
    Ok(())
}

fn azure_container(name: &str) -> Result<(), String> {
    let what = "Azure container name";
    // Azure's reserved containers are valid names.
    if matches!(name, "$root" | "$web" | "$logs") {
        return Ok(());
    }
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        return refuse(what, format!("it is {len} characters long"), AZURE_RULE);
    }
    if let Some(why) = bad_char(name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    }) {
        return refuse(what, why, AZURE_RULE);
    }
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return refuse(what, "it starts or ends with a hyphen".into(), AZURE_RULE);
    }
    if name.contains("--") {
        return refuse(what, "it has two hyphens together".into(), AZURE_RULE);
    }
    Ok(())
}

/// Checks an object-store endpoint: an `http://` or `https://` URL with a
/// host. The reason never quotes the value (it may hold credentials).
pub fn check_endpoint(raw: &str) -> Result<(), String> {
    // Credentials never go in an endpoint: the clients sign requests with
    // the provider's own credentials, and a password in a URL ends up in
    // error messages (and some characters in it crash the S3 client).
    if let Some(rest) = raw.split_once("://").map(|(_, r)| r) {
        // Before the query: an `@` there is user information (a password
        // may itself hold `/`, so the path is included).
        let before_query = rest.split(['?', '#']).next().unwrap_or_default();
        if before_query.contains('@') {
            return Err("it carries user information (user:password@); credentials come from the environment (for S3 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, for GCS GOOGLE_APPLICATION_CREDENTIALS), never from the endpoint".into());
        }
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or control characters".into());
    }
    // Lowercase schemes only: the S3 client allows plain HTTP by this prefix.
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err("it does not start with http:// or https://".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("it is not a URL ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".into());
    }
    Ok(())
}

/// Checks a key prefix: no `.` or `..` parts and no control characters.
/// Leading, trailing and doubled slashes are harmless (they are trimmed).
pub fn check_prefix(raw: &str) -> Result<(), String> {
    if raw.chars().any(char::is_control) {
        return Err("it contains control characters".into());
    }
    if raw.split('/').any(|part| part == "." || part == "..") {
        return Err("it has a `.` or `..` part; a prefix names a place inside the bucket".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_each_providers_rules() {
        use SurfaceType::*;
        let good = [
            (S3, "my-org-sparkwing"),
            (S3, "a.b-c.123"),
            (S3, "abc"),
            (S3, &"a".repeat(63)),
            (Gcs, "my_bucket-1"),
            (Gcs, &format!("{}.example.com", "a".repeat(63))),
            (AzureBlob, "sparkwing-cache"),
            (AzureBlob, "$root"),
        ];
        for (kind, name) in good {
            check_bucket(kind, name).unwrap_or_else(|e| panic!("{kind:?} {name}: {e}"));
        }
        let bad = [
            (S3, "../../x", "`/` is not allowed"),
            (S3, "ab", "2 characters long"),
            (S3, &"a".repeat(64), "64 characters long"),
            (S3, "My-Bucket", "uppercase"),
            (S3, "my_bucket", "`_` is not allowed"),
            (S3, "-abc", "starts or ends"),
            (S3, "abc.", "starts or ends"),
            (S3, "a..b", "two dots"),
            (S3, "192.168.5.4", "IP address"),
            (S3, "a b c", "whitespace"),
            (Gcs, "a..b", "empty"),
            (Gcs, "_abc", "starts or ends"),
            (Gcs, &"a".repeat(64), "64 characters long"),
            (Gcs, "10.0.0.1", "IP address"),
            (AzureBlob, "a--b", "two hyphens"),
            (AzureBlob, "a.b.c", "`.` is not allowed"),
            (AzureBlob, "abc-", "starts or ends"),
            (AzureBlob, "ab", "2 characters long"),
        ];
        for (kind, name, want) in bad {
            let e = check_bucket(kind, name).unwrap_err();
            assert!(e.contains(want), "{kind:?} {name}: {e}");
            assert!(e.starts_with("is not a valid "), "{e}");
        }
    }

    #[test]
    fn endpoints_are_http_urls_with_a_host() {
        for ok in [
            "http://127.0.0.1:9000",
            "https://s3.eu-west-1.amazonaws.com",
            "http://minio:9000/?token=t",
        ] {
            check_endpoint(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, want) in [
            ("::::", "does not start with http"),
            ("ftp://h", "does not start with http"),
            ("HTTP://h", "does not start with http"),
            ("minio:9000", "does not start with http"),
            ("http://", "not a URL"),
            ("http://h:99999", "not a URL"),
            ("http://a b", "whitespace"),
            ("http://h/\n", "whitespace"),
            ("http://u:p@minio:9000/", "user information"),
            ("http://u5er:PLANTED/PASS@127.0.0.1:9/", "user information"),
            ("http://u:\"<x@h/", "user information"),
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        check_endpoint("http://h/?q=a@b").unwrap();
    }

    #[test]
    fn prefixes_stay_inside_the_bucket() {
        for ok in ["", "state", "/team/logs/", "a//b", "v1.2/x..y"] {
            check_prefix(ok).unwrap();
        }
        for bad in ["..", "../x", "a/../../b", "./x", "a\u{1b}[2J"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
