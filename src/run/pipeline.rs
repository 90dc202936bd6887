//! The pipeline model: `.sparkwing/sparkwing.yaml`, how it is found, parsed
//! and validated before anything runs, and `sparkwing pipeline new`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::profile::ProfileDef;
use crate::yaml::{self, EnvMap, UniqueMap};

/// The project file's path relative to the project directory.
pub const PROJECT_FILE: &str = ".sparkwing/sparkwing.yaml";

/// The whole of `.sparkwing/sparkwing.yaml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub profiles: UniqueMap<ProfileDef>,
    #[serde(default)]
    pub pipelines: Vec<Pipeline>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    pub jobs: UniqueMap<Job>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    #[serde(default)]
    pub needs: Vec<String>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub env: EnvMap,
    #[serde(default)]
    pub working_directory: Option<String>,
    #[serde(default, deserialize_with = "yaml::duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub cache: Option<CacheSpec>,
    #[serde(default)]
    pub approval: Option<Approval>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub run: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub env: EnvMap,
}

impl Step {
    /// The step's display name: its `name`, else the first line of `run`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                let first = self.run.lines().next().unwrap_or("").trim();
                if first.chars().count() > 60 {
                    format!("{}…", first.chars().take(59).collect::<String>())
                } else {
                    first.to_string()
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    #[serde(default)]
    pub key: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default, deserialize_with = "yaml::duration")]
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub on_limit: Option<OnLimit>,
}

/// What a runner does when another runner holds the reservation for the
/// same cache key (coordinated in Modes 3 and 4 only).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    Coalesce,
    Skip,
    Queue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "yaml::duration")]
    pub timeout: Option<Duration>,
}

/// A parsed and validated project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory that holds `.sparkwing/`; steps run here.
    pub dir: PathBuf,
    /// The path of `sparkwing.yaml`.
    pub file: PathBuf,
    pub config: ProjectFile,
}

/// The project when there is one (given, or found walking up), else `None`.
pub fn optional_project(project_flag: Option<&Path>) -> Result<Option<Project>> {
    match project_flag {
        Some(_) => Ok(Some(load_project(project_flag)?)),
        None => {
            let cwd = std::env::current_dir()?;
            match find_project_dir(&cwd) {
                Some(d) => Ok(Some(load_project(Some(&d))?)),
                None => Ok(None),
            }
        }
    }
}

/// Resolves the profile for `req` against the user file and `project`
/// (its profiles, its default and the named pipeline's own `profile:`; an
/// unknown pipeline is an error).
pub fn resolve_profile(
    project: Option<&Project>,
    req: &crate::profile::Request,
) -> Result<crate::profile::Resolved> {
    let side = project.map(|p| crate::profile::ProjectProfiles {
        file: &p.file,
        profiles: &p.config.profiles,
        default: p.config.defaults.profile.as_deref(),
        pipeline_profile: match req.pipeline {
            Some(name) => p
                .pipeline(name)
                .map(|pl| pl.profile.as_deref())
                .map_err(|e| format!("{e:#}")),
            None => Ok(None),
        },
    });
    crate::profile::resolve(side, req)
}

impl Project {
    pub fn pipeline(&self, name: &str) -> Result<&Pipeline> {
        if let Some(p) = self.config.pipelines.iter().find(|p| p.name == name) {
            return Ok(p);
        }
        let names: Vec<&str> = self
            .config
            .pipelines
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        if names.is_empty() {
            bail!(
                "no pipeline `{name}`: {} defines no pipelines yet; add one with `sparkwing pipeline new --name {name}`",
                self.file.display()
            );
        }
        bail!(
            "no pipeline `{name}` in {}; it defines: {}. See `sparkwing pipeline list`",
            self.file.display(),
            names.join(", ")
        )
    }
}

/// Walks up from `start` to the first directory holding `.sparkwing/sparkwing.yaml`.
pub fn find_project_dir(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(PROJECT_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Finds and loads the project: `--project DIR` when given, else by walking
/// up from the current directory.
pub fn load_project(explicit: Option<&Path>) -> Result<Project> {
    let dir = match explicit {
        Some(dir) => {
            let dir = absolute(dir)?;
            if !dir.join(PROJECT_FILE).is_file() {
                bail!(
                    "--project {}: no {PROJECT_FILE} there; create one with `sparkwing pipeline new --name hello --project {}`",
                    dir.display(),
                    dir.display()
                );
            }
            dir
        }
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            find_project_dir(&cwd).with_context(|| {
                format!(
                    "no {PROJECT_FILE} in {} or any parent directory; create one with \
                     `sparkwing pipeline new --name hello`, or pass --project DIR",
                    cwd.display()
                )
            })?
        }
    };
    let file = dir.join(PROJECT_FILE);
    let text = yaml::read_file(&file).with_context(|| format!("reading {}", file.display()))?;
    let config = parse_project(&file, &text)?;
    Ok(Project { dir, file, config })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(p.canonicalize().unwrap_or(p))
}

/// Parses and validates the text of a project file. Every error names the
/// file, and the line and column or the pipeline and jobs involved.
pub fn parse_project(file: &Path, text: &str) -> Result<ProjectFile> {
    let config: ProjectFile = if text.trim().is_empty() {
        ProjectFile::default()
    } else {
        yaml::parse(file, text).map_err(anyhow::Error::msg)?
    };
    validate(file, &config).map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Names of pipelines and jobs become file names and environment values:
/// letters, digits, `-`, `_` and `.`, not starting with `.`.
pub use sparkwing_sync::doc::valid_name;

fn validate(file: &Path, config: &ProjectFile) -> Result<(), String> {
    let f = file.display();
    let mut seen = HashMap::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        if !valid_name(&p.name) {
            return Err(format!(
                "{f}: pipelines[{i}]: invalid pipeline name `{}`: use letters, digits, `-`, `_` and `.`",
                p.name
            ));
        }
        if let Some(first) = seen.insert(p.name.as_str(), i) {
            return Err(format!(
                "{f}: duplicate pipeline name `{}` (pipelines[{first}] and pipelines[{i}]): rename one",
                p.name
            ));
        }
        validate_pipeline(file, p)?;
    }
    Ok(())
}

fn validate_pipeline(file: &Path, p: &Pipeline) -> Result<(), String> {
    let f = file.display();
    let pn = &p.name;
    if p.jobs.is_empty() {
        return Err(format!(
            "{f}: pipeline `{pn}` has no jobs: add at least one under `jobs:`"
        ));
    }
    for (name, job) in p.jobs.iter() {
        if !valid_name(name) {
            return Err(format!(
                "{f}: pipeline `{pn}`: invalid job name `{name}`: use letters, digits, `-`, `_` and `.`"
            ));
        }
        if job.steps.is_empty() {
            return Err(format!(
                "{f}: pipeline `{pn}`, job `{name}` has no steps: add at least one `- run: ...`"
            ));
        }
        for (i, s) in job.steps.iter().enumerate() {
            if s.run.trim().is_empty() {
                return Err(format!(
                    "{f}: pipeline `{pn}`, job `{name}`, steps[{i}]: `run` is empty"
                ));
            }
        }
        let mut needs = BTreeSet::new();
        for n in &job.needs {
            if !p.jobs.contains_key(n) {
                return Err(format!(
                    "{f}: pipeline `{pn}`: job `{name}` needs `{n}`, which is not a job of this pipeline (jobs: {})",
                    p.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if n == name {
                return Err(format!("{f}: pipeline `{pn}`: job `{name}` needs itself"));
            }
            if !needs.insert(n) {
                return Err(format!(
                    "{f}: pipeline `{pn}`: job `{name}` lists `{n}` twice in needs"
                ));
            }
        }
        if let Some(wd) = &job.working_directory {
            if Path::new(wd).is_absolute()
                || Path::new(wd)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(format!(
                    "{f}: pipeline `{pn}`, job `{name}`: working_directory `{wd}` must be a path inside the project (relative, no `..`)"
                ));
            }
        }
        if let Some(c) = &job.cache {
            if c.outputs.is_empty() {
                return Err(format!(
                    "{f}: pipeline `{pn}`, job `{name}`: cache needs at least one path in `outputs` (what to store and restore)"
                ));
            }
            for o in &c.outputs {
                if Path::new(o).is_absolute()
                    || Path::new(o)
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    return Err(format!(
                        "{f}: pipeline `{pn}`, job `{name}`: cache output `{o}` must be a path inside the project (relative, no `..`)"
                    ));
                }
            }
            for k in &c.key {
                if let Err(e) = glob::Pattern::new(k) {
                    return Err(format!(
                        "{f}: pipeline `{pn}`, job `{name}`: cache key pattern `{k}` is not a valid glob: {e}"
                    ));
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(p) {
        return Err(format!(
            "{f}: pipeline `{pn}`: jobs form a cycle: {} — remove one of these needs",
            cycle.join(" -> ")
        ));
    }
    Ok(())
}

/// A cycle in the `needs` graph as a closed path of job names, if any.
fn find_cycle(p: &Pipeline) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let names: Vec<&String> = p.jobs.keys().collect();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut mark = vec![Mark::New; names.len()];
    let mut path: Vec<usize> = Vec::new();
    // Iterative DFS: (node, next child index).
    for start in 0..names.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Active;
        path.push(start);
        while let Some((node, child)) = stack.last_mut() {
            let needs = &p.jobs[*node].needs;
            if *child < needs.len() {
                let next = index[needs[*child].as_str()];
                *child += 1;
                match mark[next] {
                    Mark::Active => {
                        let pos = path.iter().position(|&x| x == next).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[pos..].iter().map(|&i| names[i].clone()).collect();
                        cycle.push(names[next].clone());
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[next] = Mark::Active;
                        path.push(next);
                        stack.push((next, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

impl Pipeline {
    /// Whether two jobs of this pipeline may run at the same time (neither
    /// depends on the other, directly or not).
    pub fn has_parallel_jobs(&self) -> bool {
        let names: Vec<&String> = self.jobs.keys().collect();
        let reach = |from: &str| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut todo = vec![from.to_string()];
            while let Some(j) = todo.pop() {
                for n in &self.jobs[&j].needs {
                    if seen.insert(n.clone()) {
                        todo.push(n.clone());
                    }
                }
            }
            seen
        };
        let ancestors: Vec<BTreeSet<String>> = names.iter().map(|n| reach(n)).collect();
        for i in 0..names.len() {
            for j in (i + 1)..names.len() {
                if !ancestors[i].contains(names[j]) && !ancestors[j].contains(names[i]) {
                    return true;
                }
            }
        }
        false
    }
}

/// The YAML of a new, working pipeline entry, indented as a list item by `indent`.
fn scaffold(name: &str, indent: &str) -> String {
    format!(
        "{indent}- name: {name}\n\
         {indent}  description: Describe what {name} does\n\
         {indent}  jobs:\n\
         {indent}    main:\n\
         {indent}      steps:\n\
         {indent}        - name: say hello\n\
         {indent}          run: echo \"hello from {name}; replace this step with your own commands\"\n"
    )
}

/// Adds a scaffolded pipeline to the project file (creating the file under
/// `dir` when there is none), keeping the rest of the file as written.
/// Returns the path written. The result is validated before it is written.
pub fn add_pipeline(dir: &Path, name: &str) -> Result<PathBuf> {
    if !valid_name(name) {
        bail!("--name `{name}`: use letters, digits, `-`, `_` and `.`, not starting with `.`");
    }
    let file = dir.join(PROJECT_FILE);
    let old = match yaml::read_file(&file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let new = match &old {
        None => format!("pipelines:\n{}", scaffold(name, "  ")),
        Some(text) => {
            let config = parse_project(&file, text)?;
            if config.pipelines.iter().any(|p| p.name == name) {
                bail!(
                    "{}: a pipeline named `{name}` already exists; pick another --name",
                    file.display()
                );
            }
            insert_pipeline_text(text, name)
        }
    };
    parse_project(&file, &new).with_context(|| {
        format!(
            "could not add the pipeline to {} automatically; add this under `pipelines:` yourself:\n{}",
            file.display(),
            scaffold(name, "  ")
        )
    })?;
    std::fs::create_dir_all(dir.join(".sparkwing"))
        .with_context(|| format!("creating {}", dir.join(".sparkwing").display()))?;
    crate::util::write_atomic(&file, new.as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// Inserts the scaffold at the end of the top-level `pipelines:` block, or
/// appends a new block when the file has none.
fn insert_pipeline_text(text: &str, name: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("pipelines:")) else {
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        return format!("{text}{sep}pipelines:\n{}", scaffold(name, "  "));
    };
    let head = lines[start].trim_end();
    if head != "pipelines:" && head.split('#').next().map(str::trim_end) == Some("pipelines: []") {
        let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        out[start] = "pipelines:".into();
        out.insert(start + 1, scaffold(name, "  ").trim_end().to_string());
        return out.join("\n") + "\n";
    }
    // The block ends at the next top-level key (a line starting with a
    // character other than space, `-` or `#`).
    let mut end = lines.len();
    let mut indent = "  ".to_string();
    let mut found_item = false;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let first = l.chars().next();
        if matches!(first, Some(c) if c != ' ' && c != '-' && c != '#' && c != '\t') {
            end = i;
            break;
        }
        if !found_item {
            let trimmed = l.trim_start();
            if trimmed.starts_with("- ") || trimmed == "-" {
                indent = l[..l.len() - trimmed.len()].to_string();
                found_item = true;
            }
        }
    }
    // Keep trailing blank lines and comments after the new entry.
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut out: Vec<String> = lines[..end].iter().map(|s| s.to_string()).collect();
    out.push(scaffold(name, &indent).trim_end().to_string());
    out.extend(lines[end..].iter().map(|s| s.to_string()));
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProjectFile, String> {
        parse_project(Path::new("sw.yaml"), text).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn accepts_the_design_example() {
        let text = r#"
pipelines:
  - name: release
    description: Build once per input
    profile: team-db
    jobs:
      build:
        cache:
          key: [Cargo.lock, "src/**"]
          outputs: [target/release/app]
          ttl: 7d
          on_limit: coalesce
        steps:
          - run: cargo build --release
      deploy:
        needs: [build]
        approval: { message: "Ship it?", timeout: 1h }
        timeout: 10m
        env: { PORT: 8080, DEBUG: true }
        steps:
          - run: ./deploy.sh
            name: deploy
            env: { A: b }
"#;
        let f = parse(text).unwrap();
        let p = &f.pipelines[0];
        assert_eq!(p.jobs["deploy"].env["PORT"].0, "8080");
        assert_eq!(
            p.jobs["build"].cache.as_ref().unwrap().ttl,
            Some(Duration::from_secs(7 * 86400))
        );
        assert!(!p.has_parallel_jobs());
    }

    #[test]
    fn rejects_unknown_keys_with_line_and_column() {
        let e =
            parse("pipelines:\n  - name: a\n    jobs:\n      x:\n        stepz: []\n").unwrap_err();
        assert!(e.starts_with("sw.yaml:5:9: "), "{e}");
        assert!(e.contains("unknown field `stepz`"), "{e}");
    }

    #[test]
    fn rejects_duplicates_unknown_needs_and_cycles() {
        let dup_job = "pipelines:\n  - name: a\n    jobs:\n      x: {steps: [{run: a}]}\n      x: {steps: [{run: b}]}\n";
        assert!(parse(dup_job).unwrap_err().contains("duplicate key `x`"));
        let dup_pipe = "pipelines:\n  - name: a\n    jobs: {x: {steps: [{run: a}]}}\n  - name: a\n    jobs: {x: {steps: [{run: a}]}}\n";
        assert!(parse(dup_pipe)
            .unwrap_err()
            .contains("duplicate pipeline name `a`"));
        let unknown =
            "pipelines:\n  - name: a\n    jobs: {x: {needs: [nope], steps: [{run: a}]}}\n";
        let e = parse(unknown).unwrap_err();
        assert!(e.contains("job `x` needs `nope`"), "{e}");
        let cycle = "pipelines:\n  - name: a\n    jobs:\n      x: {needs: [z], steps: [{run: a}]}\n      y: {needs: [x], steps: [{run: a}]}\n      z: {needs: [y], steps: [{run: a}]}\n";
        let e = parse(cycle).unwrap_err();
        assert!(e.contains("cycle: x -> z -> y -> x"), "{e}");
    }

    #[test]
    fn rejects_bad_durations_and_names() {
        let e = parse("pipelines:\n  - name: a\n    jobs:\n      x:\n        timeout: 5 parsecs\n        steps: [{run: a}]\n").unwrap_err();
        assert!(
            e.contains("sw.yaml:5:") && e.contains("invalid duration"),
            "{e}"
        );
        let e = parse("pipelines:\n  - name: a\n    jobs:\n      ../x: {steps: [{run: a}]}\n")
            .unwrap_err();
        assert!(e.contains("invalid job name"), "{e}");
    }

    #[test]
    fn detects_parallel_jobs() {
        let f = parse("pipelines:\n  - name: a\n    jobs:\n      x: {steps: [{run: a}]}\n      y: {steps: [{run: a}]}\n").unwrap();
        assert!(f.pipelines[0].has_parallel_jobs());
    }

    #[test]
    fn scaffold_inserts_into_existing_block_and_keeps_the_rest() {
        let text = "# my pipelines\npipelines:\n- name: a\n  jobs: {x: {steps: [{run: a}]}}\n\ndefaults:\n  profile: laptop\n";
        let out = insert_pipeline_text(text, "b");
        let f = parse(&out).unwrap();
        assert_eq!(f.pipelines.len(), 2);
        assert_eq!(f.defaults.profile.as_deref(), Some("laptop"));
        assert!(out.starts_with("# my pipelines\n"));
        let out = insert_pipeline_text("defaults: {}\n", "c");
        assert_eq!(parse(&out).unwrap().pipelines[0].name, "c");
        let out = insert_pipeline_text("pipelines: []\n", "d");
        assert_eq!(parse(&out).unwrap().pipelines[0].name, "d");
    }
}
