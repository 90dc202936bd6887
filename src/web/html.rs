//! The dashboard's pages as server-rendered HTML. Every value that comes
//! from a run, a log or a remote document goes through [`esc`] (or the log
//! renderer, which escapes too); nothing here builds markup from raw input.
//! Pages carry no inline script or style: the CSP forbids both, so an
//! escaping slip could still not run code.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::ansi::escape as esc;
use crate::remote::runs::ListQuery;
use crate::status::{JobStatus, Tone};

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Chrome shared by every page.
pub struct Page<'a> {
    pub title: &'a str,
    pub source: &'a str,
    pub nav: &'a str,
    pub has_sync: bool,
    /// A URL the script re-fetches the main part from while it changes.
    pub refresh: Option<String>,
}

impl Page<'_> {
    pub fn render(&self, main: &str) -> String {
        let mut nav = String::new();
        let mut items = vec![
            ("runs", "/", "Runs"),
            ("pipelines", "/pipelines", "Pipelines"),
        ];
        if self.has_sync {
            items.push(("sync", "/sync", "Sync"));
        }
        for (key, href, label) in items {
            let cur = if key == self.nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{href}\"{cur}>{label}</a>");
        }
        let refresh = self
            .refresh
            .as_deref()
            .map(|u| format!(" data-refresh=\"{}\"", esc(u)))
            .unwrap_or_default();
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · sparkwing</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
<link rel=\"icon\" href=\"/assets/icon.svg\" type=\"image/svg+xml\">\
<script src=\"/assets/app.js\" defer></script></head>\n<body><header>\
<a class=\"brand\" href=\"/\">sparkwing</a><nav>{nav}</nav>\
<span class=\"src\" title=\"what this dashboard reads\">{source}</span></header>\n\
<main id=\"main\"{refresh}>{main}</main></body></html>\n",
            title = esc(self.title),
            source = esc(self.source),
        )
    }
}

/// A status shown by colour, symbol and word.
pub fn badge(status: &str) -> String {
    let sym = match (Tone::of(status), JobStatus::parse(status)) {
        (_, Some(JobStatus::Cached)) => "♻",
        (Some(Tone::Ok), _) => "✓",
        (Some(Tone::Bad), _) => "✗",
        (Some(Tone::Running), _) => "●",
        (Some(Tone::Waiting), _) => "○",
        (Some(Tone::Stopped), _) => "■",
        (Some(Tone::Muted), _) => "–",
        (None, _) => "?",
    };
    let class = status_class(status);
    format!(
        "<span class=\"st st-{class}\">{sym} {}</span>",
        esc(if status.is_empty() { "unknown" } else { status })
    )
}

pub fn duration(ms: &Value) -> String {
    match ms.as_i64() {
        Some(m) => esc(&crate::util::human_duration(
            std::time::Duration::from_millis(m.max(0) as u64),
        )),
        None => "–".into(),
    }
}

fn time(v: &str) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let shown = v.replace('T', " ").trim_end_matches('Z').to_string();
    let shown = shown.split('.').next().unwrap_or_default().to_string();
    format!("<time datetime=\"{}\">{} UTC</time>", esc(v), esc(&shown))
}

fn sync_word(v: &str) -> String {
    let class = match v {
        "synced" | "remote" => "ok",
        "local only" => "warn",
        _ => "muted",
    };
    format!("<span class=\"sync sync-{class}\">{}</span>", esc(v))
}

/// Runs per page of the runs list unless `limit` says otherwise.
pub const PAGE: usize = 50;

/// The query parameters of a runs list page: its filters, its page size
/// when not the default, and `before`.
pub fn list_params(view: &ListQuery, before: Option<&str>) -> Vec<String> {
    let limit = (view.limit != PAGE).then(|| view.limit.to_string());
    [
        ("pipeline", view.pipeline),
        ("status", view.status),
        ("limit", limit.as_deref()),
        ("before", before),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
    .collect()
}

fn query(view: &ListQuery, before: Option<&str>) -> String {
    let q = list_params(view, before);
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// The runs list: filters, table, paging.
pub fn runs_list(
    rows: &[Value],
    view: &ListQuery,
    warning: Option<&str>,
    pipelines: &[String],
) -> String {
    let mut h = String::new();
    h.push_str("<h1>Runs</h1>");
    if let Some(w) = warning {
        let _ = write!(h, "<p class=\"warn-box\">{}</p>", esc(w));
    }
    // Filters: a plain GET form.
    h.push_str("<form class=\"filters\" method=\"get\" action=\"/\">");
    let _ = write!(
        h,
        "<label>Pipeline <input name=\"pipeline\" list=\"pipelines\" value=\"{}\" placeholder=\"any\"></label><datalist id=\"pipelines\">",
        esc(view.pipeline.unwrap_or(""))
    );
    for p in pipelines {
        let _ = write!(h, "<option value=\"{}\">", esc(p));
    }
    h.push_str("</datalist><label>Status <select name=\"status\"><option value=\"\">any</option>");
    for st in crate::status::RunStatus::ALL.iter().map(|s| s.as_str()) {
        let sel = if view.status == Some(st) {
            " selected"
        } else {
            ""
        };
        let _ = write!(h, "<option{sel}>{st}</option>");
    }
    h.push_str("</select></label><button type=\"submit\">Filter</button>");
    if view.pipeline.is_some() || view.status.is_some() {
        h.push_str("<a href=\"/\">clear</a>");
    }
    h.push_str("</form>");
    if rows.is_empty() {
        h.push_str(if view.pipeline.is_some() || view.status.is_some() || view.before.is_some() {
            "<p class=\"empty\">No runs match.</p>"
        } else {
            "<p class=\"empty\">No runs yet. Start one with <code>sparkwing run PIPELINE</code>.</p>"
        });
    } else {
        h.push_str("<div class=\"scroll\"><table class=\"runs\"><thead><tr><th>Run</th><th>Pipeline</th><th>Status</th><th>Started</th><th>Duration</th><th>Host</th><th>Sync</th></tr></thead><tbody>");
        for r in rows {
            let id = s(r, "id");
            let _ = write!(
                h,
                "<tr><td><a class=\"mono id\" href=\"/runs/{}\" title=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                enc(id),
                esc(id),
                esc(id.get(..26).unwrap_or(id)),
                esc(s(r, "pipeline")),
                badge(s(r, "status")),
                time(s(r, "started_at")),
                duration(&r["duration_ms"]),
                esc(s(r, "host")),
                sync_word(r.get("sync").and_then(Value::as_str).unwrap_or("unknown")),
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("<nav class=\"pager\">");
    if view.before.is_some() {
        let _ = write!(h, "<a href=\"/{}\">« Newest</a>", query(view, None));
    }
    if rows.len() >= view.limit {
        if let Some(last) = rows.last() {
            let _ = write!(
                h,
                "<a rel=\"next\" href=\"/{}\">Older »</a>",
                query(view, Some(s(last, "id")))
            );
        }
    }
    h.push_str("</nav>");
    h
}

/// Layers of the job DAG: each job one column right of its deepest need.
fn layers(jobs: &[Value]) -> Vec<(String, usize, Vec<String>)> {
    let names: Vec<String> = jobs.iter().map(|j| s(j, "name").to_string()).collect();
    let needs: HashMap<&str, Vec<String>> = jobs
        .iter()
        .map(|j| {
            let n = crate::report::needs_of(j)
                .into_iter()
                .filter(|x| names.iter().any(|n| n == x))
                .map(String::from)
                .collect();
            (s(j, "name"), n)
        })
        .collect();
    let mut depth: HashMap<String, usize> = HashMap::new();
    // Bounded relaxation: a cycle in a hostile document cannot loop forever.
    for _ in 0..names.len() {
        let mut changed = false;
        for n in &names {
            let d = needs[n.as_str()]
                .iter()
                .map(|x| depth.get(x).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0)
                .min(names.len());
            if depth.get(n) != Some(&d) {
                depth.insert(n.clone(), d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                depth.get(n).copied().unwrap_or(0),
                needs[n.as_str()].clone(),
            )
        })
        .collect()
}

/// The CSS class of a status's tone (`st-ok`, `st-bad`, …).
fn status_class(st: &str) -> &'static str {
    match Tone::of(st) {
        Some(Tone::Ok) => "ok",
        Some(Tone::Bad) => "bad",
        Some(Tone::Running) => "run",
        Some(Tone::Stopped) => "warn",
        Some(Tone::Waiting) => "wait",
        Some(Tone::Muted) | None => "muted",
    }
}

/// The job DAG as an SVG: columns by depth, edges from needs to jobs.
pub fn dag_svg(jobs: &[Value]) -> String {
    const W: usize = 168;
    const H: usize = 46;
    const GX: usize = 56;
    const GY: usize = 14;
    let l = layers(jobs);
    let status: HashMap<&str, &str> = jobs
        .iter()
        .map(|j| (s(j, "name"), s(j, "status")))
        .collect();
    let mut rows_in: HashMap<usize, usize> = HashMap::new();
    let mut pos: HashMap<String, (usize, usize)> = HashMap::new();
    for (name, d, _) in &l {
        let r = rows_in.entry(*d).or_default();
        pos.insert(name.clone(), (8 + d * (W + GX), 8 + *r * (H + GY)));
        *r += 1;
    }
    let width = 16 + (rows_in.keys().max().copied().unwrap_or(0) + 1) * (W + GX) - GX;
    let height = 16 + rows_in.values().max().copied().unwrap_or(1) * (H + GY) - GY;
    let mut svg = format!(
        "<svg class=\"dag\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"job graph\">"
    );
    for (name, _, needs) in &l {
        let (x2, y2) = pos[name];
        for n in needs {
            let (x1, y1) = pos[n];
            let (ax, ay, bx, by) = (x1 + W, y1 + H / 2, x2, y2 + H / 2);
            let mid = (ax + bx) / 2;
            let _ = write!(
                svg,
                "<path class=\"edge\" d=\"M{ax} {ay} C{mid} {ay} {mid} {by} {bx} {by}\"/>"
            );
        }
    }
    for (name, _, _) in &l {
        let (x, y) = pos[name];
        let st = status.get(name.as_str()).copied().unwrap_or("");
        let shown: String = if name.chars().count() > 22 {
            name.chars().take(21).chain(['…']).collect()
        } else {
            name.clone()
        };
        let _ = write!(
            svg,
            "<a href=\"#job-{}\"><g class=\"node n-{}\"><title>{}: {}</title><rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\"/><text x=\"{}\" y=\"{}\" class=\"nm\">{}</text><text x=\"{}\" y=\"{}\" class=\"ns\">{}</text></g></a>",
            enc(name),
            status_class(st),
            esc(name),
            esc(st),
            x + 10,
            y + 19,
            esc(&shown),
            x + 10,
            y + 36,
            esc(st),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A run's page: summary, DAG, jobs with steps and cache provenance.
pub fn run_detail(doc: &Value, caches: &HashMap<String, Value>) -> String {
    let id = s(doc, "id");
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>{} <span class=\"mono small\">{}</span> {}</h1>",
        esc(s(doc, "pipeline")),
        esc(id),
        badge(s(doc, "status"))
    );
    h.push_str("<dl class=\"facts\">");
    for (k, v) in [
        ("Started", time(s(doc, "started_at"))),
        ("Finished", time(s(doc, "finished_at"))),
        ("Duration", duration(&doc["duration_ms"])),
        ("Host", esc(s(doc, "host"))),
        ("Profile", esc(s(doc, "profile"))),
        ("Sync", sync_word(s(doc, "sync"))),
    ] {
        let _ = write!(h, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    }
    h.push_str("</dl>");
    if let Some(e) = doc["error"].as_str() {
        let _ = write!(
            h,
            "<p class=\"err-box\">{}</p>",
            esc(&crate::profile::scrub(e))
        );
    }
    let jobs: Vec<Value> = doc["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.is_object() && j["name"].is_string())
        .collect();
    if jobs.is_empty() {
        h.push_str("<p class=\"empty\">This run records no jobs.</p>");
        return h;
    }
    h.push_str("<h2>Jobs</h2><div class=\"scroll\">");
    h.push_str(&dag_svg(&jobs));
    h.push_str("</div>");
    for j in &jobs {
        let name = s(j, "name");
        let _ = write!(
            h,
            "<section class=\"job\" id=\"job-{}\"><h3>{} {} <span class=\"small\">{}</span> <a class=\"small\" href=\"/runs/{}/jobs/{}/log\">log</a></h3>",
            enc(name),
            esc(name),
            badge(s(j, "status")),
            duration(&j["duration_ms"]),
            enc(id),
            enc(name)
        );
        let needs = crate::report::needs_of(j);
        if !needs.is_empty() {
            let _ = write!(
                h,
                "<p class=\"small\">needs {}</p>",
                needs
                    .iter()
                    .map(|n| format!("<a href=\"#job-{}\">{}</a>", enc(n), esc(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(from) = j["cached_from_run"].as_str() {
            let _ = write!(
                h,
                "<p class=\"cache\">♻ restored from run <a class=\"mono\" href=\"/runs/{}\">{}</a></p>",
                enc(from),
                esc(from)
            );
        } else if let Some(key) = j["cache_key"].as_str() {
            let _ = write!(
                h,
                "<p class=\"cache\">cache key <span class=\"mono\">{}</span>{}</p>",
                esc(key.get(..16).unwrap_or(key)),
                if JobStatus::parse(s(j, "status")) == Some(JobStatus::Success) {
                    " · outputs saved"
                } else {
                    ""
                }
            );
        }
        if let Some(key) = j["cache_key"].as_str() {
            if let Some(c) = caches.get(key) {
                let files: Vec<&Value> = c["manifest"]["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .collect();
                let total: u64 = files.iter().filter_map(|f| f["size"].as_u64()).sum();
                let _ = write!(
                    h,
                    "<details class=\"small\"><summary>cached outputs: {} file(s), {} (from {})</summary><ul>",
                    files.len(),
                    esc(&crate::util::human_bytes(total)),
                    esc(s(c, "from"))
                );
                for f in files.iter().take(50) {
                    let _ = write!(
                        h,
                        "<li class=\"mono\">{} <span class=\"muted\">{}</span></li>",
                        esc(s(f, "path")),
                        esc(&crate::util::human_bytes(f["size"].as_u64().unwrap_or(0)))
                    );
                }
                h.push_str("</ul></details>");
            }
        }
        if let Some(e) = j["error"].as_str() {
            let _ = write!(
                h,
                "<p class=\"err-box\">{}</p>",
                esc(&crate::profile::scrub(e))
            );
        }
        let steps: Vec<&Value> = j["steps"].as_array().into_iter().flatten().collect();
        if !steps.is_empty() {
            h.push_str("<table class=\"steps\"><thead><tr><th>#</th><th>Step</th><th>Status</th><th>Exit</th><th>Duration</th></tr></thead><tbody>");
            for st in steps {
                let _ =
                    write!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    st["index"].as_i64().map(|i| i.to_string()).unwrap_or_default(),
                    esc(s(st, "name")),
                    badge(s(st, "status")),
                    st["exit_code"].as_i64().map(|c| c.to_string()).unwrap_or_else(|| "–".into()),
                    duration(&st["duration_ms"]),
                );
            }
            h.push_str("</tbody></table>");
        }
        h.push_str("</section>");
    }
    h
}

/// A job's log page: the tail already rendered, and where the live stream
/// continues from.
pub struct LogView<'a> {
    pub run: &'a str,
    pub job: &'a str,
    pub status: &'a str,
    /// The tail, already rendered to HTML by the ANSI renderer.
    pub html: &'a str,
    /// What was left out before the tail ("3.0 MiB of 50.0 MiB"), when the
    /// log is longer than what the page shows.
    pub skipped: Option<String>,
    /// The cursor the live stream starts from, when the job is still running.
    pub stream_from: Option<String>,
}

pub fn log_page(v: &LogView) -> String {
    let mut h = String::new();
    let (run, job) = (enc(v.run), enc(v.job));
    let _ = write!(
        h,
        "<h1>{} <span class=\"small\">log of run <a class=\"mono\" href=\"/runs/{run}#job-{job}\">{}</a></span> {}</h1>",
        esc(v.job),
        esc(v.run),
        badge(v.status)
    );
    let _ = write!(
        h,
        "<p class=\"tools\"><a href=\"/runs/{run}/jobs/{job}/log.txt\">raw</a> · <a href=\"/runs/{run}/jobs/{job}/log.txt?download=1\">download</a></p>"
    );
    if let Some(skipped) = &v.skipped {
        let _ = write!(
            h,
            "<p class=\"note\">Showing the end of the log: {} left out; the download has all of it.</p>",
            esc(skipped)
        );
    }
    let stream = v
        .stream_from
        .as_deref()
        .map(|c| {
            format!(
                " data-stream=\"/runs/{run}/jobs/{job}/log/stream?from={}\"",
                enc(c)
            )
        })
        .unwrap_or_default();
    let _ = write!(h, "<pre id=\"log\" class=\"log\"{stream}>{}</pre>", v.html);
    if v.stream_from.is_some() {
        h.push_str("<p id=\"log-state\" class=\"live\">● live: new output appears here as the job writes it</p>");
    } else if v.html.is_empty() {
        h.push_str("<p class=\"empty\">No output.</p>");
    }
    h
}

/// The pipelines page: the project's pipelines (dashboard start in a
/// project) and every pipeline seen in recent runs, with their last run.
pub fn pipelines(project: &[Value], recent: &[Value], has_project: bool) -> String {
    let mut last: Vec<(String, &Value, usize)> = Vec::new();
    for r in recent {
        let p = s(r, "pipeline").to_string();
        match last.iter_mut().find(|(n, _, _)| *n == p) {
            Some(e) => e.2 += 1,
            None => last.push((p, r, 1)),
        }
    }
    let mut names: Vec<String> = project.iter().map(|p| s(p, "name").to_string()).collect();
    for (n, _, _) in &last {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut h = String::from("<h1>Pipelines</h1>");
    if names.is_empty() {
        h.push_str(if has_project {
            "<p class=\"empty\">The project defines no pipelines; add one with <code>sparkwing pipeline new --name NAME</code>.</p>"
        } else {
            "<p class=\"empty\">No runs yet, so no pipelines to show.</p>"
        });
        return h;
    }
    h.push_str("<div class=\"scroll\"><table><thead><tr><th>Pipeline</th><th>Description</th><th>Jobs</th><th>Last run</th><th>Recent runs</th></tr></thead><tbody>");
    for n in &names {
        let def = project.iter().find(|p| s(p, "name") == n);
        let desc = def.map(|d| s(d, "description")).unwrap_or("");
        let jobs = def
            .and_then(|d| d["jobs"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(esc)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "–".into());
        let (lastrun, count) = match last.iter().find(|(p, _, _)| p == n) {
            Some((_, r, c)) => (
                format!(
                    "{} <a class=\"mono small\" href=\"/runs/{}\">{}</a>",
                    badge(s(r, "status")),
                    enc(s(r, "id")),
                    time(s(r, "started_at"))
                ),
                *c,
            ),
            None => ("never run".into(), 0),
        };
        let _ = write!(
            h,
            "<tr><td><a href=\"/?pipeline={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            enc(n),
            esc(n),
            esc(desc),
            jobs,
            lastrun,
            count
        );
    }
    h.push_str("</tbody></table></div>");
    h
}

/// The sync page: per target, connectivity and backlog from the outbox.
pub fn sync_page(profile: &str, stats: &[Value]) -> String {
    let mut h = format!(
        "<h1>Sync <span class=\"small\">profile {}</span></h1>",
        esc(profile)
    );
    if stats.is_empty() {
        h.push_str("<p class=\"empty\">Nothing queued: every write of this profile has been delivered, or the profile keeps everything on this machine (Mode 1).</p>");
        return h;
    }
    for t in stats {
        let conn = s(t, "connectivity");
        let class = match conn {
            "online" => "ok",
            "offline" => "warn",
            "auth_failed" | "auth-failed" | "misconfigured" => "bad",
            _ => "muted",
        };
        let _ = write!(
            h,
            "<section class=\"target\"><h2 class=\"mono\">{}</h2><p><span class=\"st st-{class}\">{}</span>{}</p><dl class=\"facts\">",
            esc(s(t, "target")),
            esc(if conn.is_empty() { "unknown" } else { conn }),
            t["since"]
                .as_str()
                .map(|x| format!(" since {}", time(x)))
                .unwrap_or_default()
        );
        let num = |k: &str| t[k].as_u64().unwrap_or(0);
        for (k, v) in [
            (
                "Pending",
                format!(
                    "{} entries, {}",
                    num("pending_entries"),
                    esc(&crate::util::human_bytes(num("pending_bytes")))
                ),
            ),
            (
                "Oldest pending",
                t["oldest_pending_age_ms"]
                    .as_i64()
                    .map(|m| format!("{} ago", duration(&Value::from(m))))
                    .unwrap_or_else(|| "–".into()),
            ),
            ("Last success", time(s(t, "last_success_at"))),
            ("Quarantined", num("quarantined").to_string()),
            (
                "Delivered",
                format!(
                    "{} entries, {}",
                    num("delivered_entries"),
                    esc(&crate::util::human_bytes(num("delivered_bytes")))
                ),
            ),
            (
                "Drain estimate",
                t["drain_estimate_s"]
                    .as_f64()
                    .map(|x| format!("about {}", duration(&Value::from((x * 1000.0) as i64))))
                    .unwrap_or_else(|| "unknown until a delivery succeeds".into()),
            ),
        ] {
            let _ = write!(h, "<div><dt>{k}</dt><dd>{v}</dd></div>");
        }
        h.push_str("</dl>");
        let kinds: Vec<&Value> = t["pending_by_kind"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if !kinds.is_empty() {
            h.push_str("<table class=\"small\"><thead><tr><th>Kind</th><th>Entries</th><th>Bytes</th></tr></thead><tbody>");
            for k in kinds {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(s(k, "kind")),
                    k["entries"].as_u64().unwrap_or(0),
                    esc(&crate::util::human_bytes(k["bytes"].as_u64().unwrap_or(0)))
                );
            }
            h.push_str("</tbody></table>");
        }
        if let Some(e) = t["last_error"].as_str() {
            let _ = write!(
                h,
                "<p class=\"err-box\">last error ({}): {}</p>",
                esc(s(t, "last_error_class")),
                esc(e)
            );
        }
        h.push_str("</section>");
    }
    h
}

/// A page for an error (404, unreadable remote), with what to do next.
pub fn error_page(title: &str, detail: &str) -> String {
    format!(
        "<h1>{}</h1><p class=\"err-box\">{}</p><p><a href=\"/\">Back to the runs</a></p>",
        esc(title),
        esc(&crate::profile::scrub(detail))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostile_values_are_escaped_everywhere() {
        let x = "<script>alert(1)</script>";
        let doc = json!({
            "id": x, "pipeline": x, "status": x, "host": x, "profile": x, "sync": x,
            "started_at": x, "error": x,
            "jobs": [{"name": x, "status": x, "needs": [x, "nope"], "cached_from_run": x, "error": x,
                      "steps": [{"index": 0, "name": x, "status": x}]}],
        });
        let pages = [
            run_detail(&doc, &HashMap::new()),
            runs_list(
                std::slice::from_ref(&doc),
                &ListQuery {
                    pipeline: Some(x),
                    status: Some(x),
                    before: Some(x),
                    limit: 1,
                },
                Some(x),
                &[x.to_string()],
            ),
            pipelines(
                &[json!({"name": x, "description": x, "jobs": [x]})],
                std::slice::from_ref(&doc),
                true,
            ),
            sync_page(
                x,
                &[
                    json!({"target": x, "connectivity": x, "last_error": x, "last_error_class": x, "pending_by_kind": [{"kind": x}]}),
                ],
            ),
            error_page(x, x),
            log_page(&LogView {
                run: x,
                job: x,
                status: x,
                html: "",
                skipped: None,
                stream_from: Some(x.into()),
            }),
            Page {
                title: x,
                source: x,
                nav: "runs",
                has_sync: true,
                refresh: Some(x.into()),
            }
            .render(""),
        ];
        for p in pages {
            assert!(!p.contains("<script>alert"), "{p}");
        }
    }

    #[test]
    fn dag_layers_follow_needs_and_survive_cycles() {
        let jobs = vec![
            json!({"name": "a", "needs": []}),
            json!({"name": "b", "needs": ["a"]}),
            json!({"name": "c", "needs": ["a", "b"]}),
        ];
        let l = layers(&jobs);
        assert_eq!(l.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0, 1, 2]);
        let cyc = vec![
            json!({"name": "x", "needs": ["y"]}),
            json!({"name": "y", "needs": ["x"]}),
        ];
        assert!(dag_svg(&cyc).contains("</svg>"));
    }

    #[test]
    fn enc_encodes_reserved_bytes() {
        assert_eq!(enc("a b/c?&é"), "a%20b%2Fc%3F%26%C3%A9");
    }
}
