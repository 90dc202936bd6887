//! Packs: how a cache entry travels to and from a remote (issue 13).
//!
//! **Saving.** An entry's files are cut into chunks: a file under [`LARGE`]
//! is one chunk, a larger one is cut by content-defined chunking (FastCDC),
//! so an edit changes only the chunks around it. A chunk the target already
//! holds (the local index, `cache_chunks`, fed by this machine's earlier
//! saves and restores) is named, not sent. New chunks go into zstd frames of
//! about [`FRAME`] plain bytes (small files share a frame and compress
//! together, as in an archive), and frames into pack objects of about
//! [`PACK`] bytes (8 MiB). A pack is named by the SHA-256 of its bytes and stored
//! where blobs go (`cas/<sha[..2]>/<sha>`): content-addressed, written once
//! by a conditional create, collected by `cache gc` like any blob.
//!
//! The manifest (version 2, zstd-compressed on the remote) lists the packs
//! and, for each file, its chunks: pack, the frame's offset and length in
//! the pack, the chunk's offset and size in the frame's plain bytes and,
//! for a file of several chunks, each chunk's SHA-256 (a file of one chunk
//! is its own). Each pack is queued on a stream of its own below the
//! entry's, so packs upload in parallel, and the manifest, on the entry's
//! stream, is published only after every pack it names
//! (`Outbox::claim`: a stream waits for the streams below it).
//!
//! **Restoring.** The frames the local CAS lacks are fetched by ranged
//! reads (neighbouring frames of a pack in one read of at most [`READ`]
//! bytes), [`PARALLEL`] at a time. Each frame is decompressed under a bound,
//! each chunk is checked by SHA-256 on its plain bytes, and a file enters
//! the CAS only whole and hashing to its name. Memory stays bounded by
//! `PARALLEL × (READ + MAX_FRAME_PLAIN)` whatever the entry's size.
//!
//! Manifests of version 1 (one blob per file, before packs) still restore:
//! their blobs are read one by one ([`crate::remote::cache`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sparkwing_sync::RemoteView;

pub use crate::local::store::ChunkLoc as Loc;
use crate::profile::scrub;
use crate::run::cache::{hex, Cas, FileEntry, Manifest};

/// The manifest version that names packs.
pub const VERSION: u32 = 2;
/// Plain bytes of small files gathered into one zstd frame.
pub const FRAME: usize = 1 << 20;
/// Most bytes of a pack (compressed frames; a frame is at most a few MiB):
/// a pack is uploaded whole, so this is a delivery's part size (the sync
/// actor holds at most `concurrency` of them at once).
pub const PACK: u64 = 8 << 20;
/// Files of at least this size are cut by content-defined chunking.
pub const LARGE: u64 = 4 << 20;
/// FastCDC's minimum, average and maximum chunk sizes.
const CDC: (u32, u32, u32) = (256 << 10, 1 << 20, 4 << 20);
/// Most plain bytes of a frame a reader accepts (a writer makes at most
/// `max(FRAME, LARGE)`).
pub const MAX_FRAME_PLAIN: u64 = 8 << 20;
/// Most bytes of one ranged read.
pub const READ: u64 = 8 << 20;
/// Ranged reads in flight during a restore.
pub const PARALLEL: usize = 4;
/// Most plain bytes of a manifest a reader accepts.
pub const MAX_MANIFEST_PLAIN: u64 = 256 << 20;
/// Most chunks one manifest may name (files of one chunk count one).
pub const MAX_CHUNKS: usize = 2_000_000;
/// zstd compression level of frames and manifests.
const LEVEL: i32 = 3;
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// One chunk of a file, where a pack holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Index into [`RemoteManifest::packs`].
    pub pack: u32,
    /// The zstd frame: its offset and length in the pack.
    pub at: u64,
    pub len: u64,
    /// The chunk: its offset and size in the frame's plain bytes.
    pub skip: u64,
    pub size: u64,
    /// SHA-256 of the chunk's plain bytes; absent for a file of one chunk
    /// (the file's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One file of a remote manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackedFile {
    pub path: String,
    /// Empty for a symlink.
    pub sha256: String,
    pub size: u64,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
    /// Version 2: the file's chunks, in order (none for an empty file or a
    /// symlink). Version 1 has none: each file is its own blob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

/// A manifest as a remote holds it: version 1 (a blob per file) or 2
/// (packs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteManifest {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
    pub files: Vec<PackedFile>,
}

impl RemoteManifest {
    /// The manifest as the local store keeps it (a blob per file).
    pub fn local(&self) -> Manifest {
        Manifest {
            version: 1,
            files: self
                .files
                .iter()
                .map(|f| FileEntry {
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                    size: f.size,
                    mode: f.mode,
                    symlink: f.symlink.clone(),
                })
                .collect(),
        }
    }

    /// The remote objects (under `cas/`) this manifest needs: its packs,
    /// or for version 1 its files' blobs.
    pub fn objects(&self) -> Vec<String> {
        if self.version == 1 {
            let mut v: Vec<String> = self
                .files
                .iter()
                .filter(|f| f.symlink.is_none())
                .map(|f| f.sha256.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        } else {
            self.packs.clone()
        }
    }

    /// Checks the structure of a manifest read from a remote (anyone who
    /// can write the bucket may have written it): a known version, pack
    /// and chunk names that are SHA-256s, chunks that lie inside their
    /// frame and add up to their file, frames within the reader's bounds.
    /// Paths are checked against the job's outputs separately
    /// ([`crate::run::cache::check_manifest`]).
    pub fn check(&self) -> Result<()> {
        match self.version {
            1 => {
                if !self.packs.is_empty() || self.files.iter().any(|f| !f.chunks.is_empty()) {
                    bail!("a version 1 manifest names packs");
                }
                return Ok(());
            }
            VERSION => {}
            v => bail!(
                "the manifest has version {v}, which this sparkwing does not know (written by a newer sparkwing? upgrade to restore it)"
            ),
        }
        let chunks: usize = self.files.iter().map(|f| f.chunks.len()).sum();
        if chunks > MAX_CHUNKS {
            bail!("the manifest names {chunks} chunks, more than the {MAX_CHUNKS} accepted");
        }
        for p in &self.packs {
            if !sparkwing_sync::doc::is_sha256(p) {
                bail!("pack {:?} is not a SHA-256", crate::util::clip(p, 70));
            }
        }
        for f in &self.files {
            let what = || crate::util::clip(&f.path, 200);
            if f.symlink.is_some() {
                if !f.chunks.is_empty() {
                    bail!("symlink {} has chunks", what());
                }
                continue;
            }
            if !sparkwing_sync::doc::is_sha256(&f.sha256) {
                bail!("file {} has an invalid blob name", what());
            }
            let mut total = 0u64;
            for c in &f.chunks {
                if c.pack as usize >= self.packs.len() {
                    bail!(
                        "file {} names pack #{}, which is not listed",
                        what(),
                        c.pack
                    );
                }
                let frame_ok = c.len > 0 && c.len <= MAX_FRAME_PLAIN + (1 << 20);
                let inside = c.size > 0
                    && c.skip
                        .checked_add(c.size)
                        .is_some_and(|end| end <= MAX_FRAME_PLAIN);
                if !frame_ok || !inside || c.at.checked_add(c.len).is_none() {
                    bail!("file {} has a chunk outside the bounds of a frame", what());
                }
                match (&c.sha256, f.chunks.len()) {
                    (None, 1) => {}
                    (Some(s), n) if n > 1 && sparkwing_sync::doc::is_sha256(s) => {}
                    _ => bail!("file {} has a chunk without a valid SHA-256", what()),
                }
                total = total.saturating_add(c.size);
            }
            if total != f.size {
                bail!(
                    "file {}: its chunks hold {total} bytes, the manifest says {}",
                    what(),
                    f.size
                );
            }
        }
        Ok(())
    }
}

/// The JSON of a manifest document as stored: zstd-compressed (version 2)
/// or plain (version 1), decompressed under [`MAX_MANIFEST_PLAIN`].
pub fn manifest_json(body: &[u8]) -> Result<Cow<'_, [u8]>> {
    bounded_json(body, MAX_MANIFEST_PLAIN)
}

fn bounded_json(body: &[u8], max: u64) -> Result<Cow<'_, [u8]>> {
    if !body.starts_with(&ZSTD_MAGIC) {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .context("the remote cache manifest is not valid zstd")?
        .take(max + 1)
        .read_to_end(&mut out)
        .context("the remote cache manifest is not valid zstd")?;
    if out.len() as u64 > max {
        bail!("the remote cache manifest decompresses to more than {max} bytes");
    }
    Ok(Cow::Owned(out))
}

/// A manifest document's bytes as stored on a remote: zstd-compressed.
pub fn encode_manifest(json: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(json, LEVEL).context("compressing a cache manifest")
}

/// A pack a save wrote, to be uploaded.
#[derive(Debug, Clone)]
pub struct NewPack {
    pub sha256: String,
    pub path: PathBuf,
    pub len: u64,
}

/// What [`build`] made of an entry.
#[derive(Debug)]
pub struct Built {
    pub manifest: RemoteManifest,
    /// New packs, in the order they must be uploaded.
    pub packs: Vec<NewPack>,
    /// Where the new packs hold each new chunk (for the local index).
    pub chunks: Vec<(String, Loc)>,
    /// Plain bytes named from earlier packs instead of sent.
    pub reused_bytes: u64,
    /// Plain bytes put into new packs.
    pub packed_bytes: u64,
}

pub use crate::run::evict::staging_dir;

/// Where a chunk goes in this save.
#[derive(Debug, Clone)]
enum Place {
    Known(Loc),
    /// In the current frame, at `skip`.
    Framed {
        skip: u64,
        size: u64,
    },
    /// In new pack number `slot`.
    New {
        slot: usize,
        at: u64,
        len: u64,
        skip: u64,
        size: u64,
    },
}

struct PackFile {
    tmp: PathBuf,
    file: fs::File,
    hash: Sha256,
    len: u64,
}

struct Builder<'a> {
    dir: PathBuf,
    known: &'a HashMap<String, Loc>,
    places: HashMap<String, Place>,
    frame: Vec<u8>,
    framed: Vec<String>,
    pack: Option<PackFile>,
    slots: Vec<NewPack>,
    zstd: zstd::bulk::Compressor<'static>,
    reused: u64,
    packed: u64,
}

impl Builder<'_> {
    /// Names a chunk already placed in this build or held by the target,
    /// without its bytes; false if it is neither.
    fn reuse(&mut self, sha: &str, size: u64) -> bool {
        if self.places.contains_key(sha) {
            self.reused += size;
            return true;
        }
        if let Some(loc) = self.known.get(sha) {
            if loc.size == size {
                self.reused += size;
                self.places
                    .insert(sha.to_string(), Place::Known(loc.clone()));
                return true;
            }
        }
        false
    }

    /// Places one chunk: named if known, else appended to the frame.
    fn chunk(&mut self, sha: &str, bytes: &[u8]) -> Result<()> {
        if self.reuse(sha, bytes.len() as u64) {
            return Ok(());
        }
        if !self.frame.is_empty() && self.frame.len() + bytes.len() > FRAME {
            self.flush_frame()?;
        }
        let skip = self.frame.len() as u64;
        self.frame.extend_from_slice(bytes);
        self.places.insert(
            sha.to_string(),
            Place::Framed {
                skip,
                size: bytes.len() as u64,
            },
        );
        self.framed.push(sha.to_string());
        self.packed += bytes.len() as u64;
        if self.frame.len() >= FRAME {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let stored = self
            .zstd
            .compress(&self.frame)
            .context("compressing a cache frame")?;
        // A pack never grows past PACK (unless one frame alone does).
        if self
            .pack
            .as_ref()
            .is_some_and(|p| p.len > 0 && p.len + stored.len() as u64 > PACK)
        {
            self.finish_pack()?;
        }
        if self.pack.is_none() {
            let tmp = self.dir.join(format!(
                ".tmp-{}-{}",
                std::process::id(),
                crate::util::new_run_id()
            ));
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| anyhow!(sparkwing_schema::StorageFault::from_io(&tmp, &e)))?;
            self.pack = Some(PackFile {
                tmp,
                file,
                hash: Sha256::new(),
                len: 0,
            });
        }
        let slot = self.slots.len();
        let pack = self.pack.as_mut().expect("a pack is open");
        pack.file
            .write_all(&stored)
            .map_err(|e| anyhow!(sparkwing_schema::StorageFault::from_io(&pack.tmp, &e)))?;
        pack.hash.update(&stored);
        let at = pack.len;
        pack.len += stored.len() as u64;
        for sha in self.framed.drain(..) {
            if let Some(Place::Framed { skip, size }) = self.places.get(&sha).cloned() {
                self.places.insert(
                    sha,
                    Place::New {
                        slot,
                        at,
                        len: stored.len() as u64,
                        skip,
                        size,
                    },
                );
            }
        }
        self.frame.clear();
        if pack.len >= PACK {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// Syncs the open pack and names it by its hash.
    fn finish_pack(&mut self) -> Result<()> {
        let Some(p) = self.pack.take() else {
            return Ok(());
        };
        let fault = |path: &Path, e: std::io::Error| {
            anyhow!(sparkwing_schema::StorageFault::from_io(path, &e))
        };
        // Durable before the outbox names it: a crash must not leave an
        // entry whose payload file is empty.
        p.file.sync_all().map_err(|e| fault(&p.tmp, e))?;
        let sha = hex(&p.hash.finalize());
        let path = self.dir.join(format!("{sha}.pack"));
        fs::rename(&p.tmp, &path).map_err(|e| fault(&path, e))?;
        self.slots.push(NewPack {
            sha256: sha,
            path,
            len: p.len,
        });
        Ok(())
    }
}

/// Cuts `manifest`'s files (read from the local CAS under `home`) into
/// chunks and packs what `known` does not hold (see the module doc).
pub fn build(home: &Path, manifest: &Manifest, known: &HashMap<String, Loc>) -> Result<Built> {
    let cas = Cas::new(home);
    let dir = staging_dir(home);
    fs::create_dir_all(&dir)
        .map_err(|e| anyhow!(sparkwing_schema::StorageFault::from_io(&dir, &e)))?;
    let mut b = Builder {
        dir,
        known,
        places: HashMap::new(),
        frame: Vec::with_capacity(FRAME),
        framed: Vec::new(),
        pack: None,
        slots: Vec::new(),
        zstd: zstd::bulk::Compressor::new(LEVEL).context("starting zstd")?,
        reused: 0,
        packed: 0,
    };
    // Each file's chunks, as (sha256, size).
    let mut cuts: Vec<Vec<(String, u64)>> = Vec::with_capacity(manifest.files.len());
    let result = (|| -> Result<()> {
        for f in &manifest.files {
            let mut cut = Vec::new();
            if f.symlink.is_some() || f.size == 0 {
                cuts.push(cut);
                continue;
            }
            // A small file the target already holds is named unread (its
            // bytes there were verified when they were packed or fetched).
            if f.size < LARGE && b.reuse(&f.sha256, f.size) {
                cut.push((f.sha256.clone(), f.size));
                cuts.push(cut);
                continue;
            }
            let path = cas.blob_path(&f.sha256);
            let file = fs::File::open(&path)
                .with_context(|| format!("reading blob {} of {}", f.sha256, f.path))?;
            if f.size < LARGE {
                let mut bytes = Vec::with_capacity(f.size as usize);
                file.take(LARGE).read_to_end(&mut bytes)?;
                // The bytes sent are the bytes named: a blob damaged on
                // this disk is never packed (nor named by later saves).
                if hex(&Sha256::digest(&bytes)) != f.sha256 {
                    return Err(corrupt_blob(&cas, f));
                }
                b.chunk(&f.sha256, &bytes)?;
                cut.push((f.sha256.clone(), f.size));
            } else {
                let (min, avg, max) = CDC;
                let mut whole = Sha256::new();
                for c in fastcdc::v2020::StreamCDC::new(file, min, avg, max) {
                    let c =
                        c.map_err(|e| anyhow!("reading blob {} of {}: {e}", f.sha256, f.path))?;
                    whole.update(&c.data);
                    let sha = hex(&Sha256::digest(&c.data));
                    b.chunk(&sha, &c.data)?;
                    cut.push((sha, c.length as u64));
                }
                // Checked before anything of this build is queued or
                // indexed: a mismatch abandons the whole build.
                if hex(&whole.finalize()) != f.sha256 {
                    return Err(corrupt_blob(&cas, f));
                }
            }
            cuts.push(cut);
        }
        b.flush_frame()?;
        b.finish_pack()
    })();
    if let Err(e) = result {
        if let Some(p) = b.pack.take() {
            let _ = fs::remove_file(&p.tmp);
        }
        return Err(e);
    }
    // Pack names, in order of first use.
    let mut packs: Vec<String> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut pack_index = |name: &str| -> u32 {
        if let Some(&i) = index.get(name) {
            return i;
        }
        let i = packs.len() as u32;
        packs.push(name.to_string());
        index.insert(name.to_string(), i);
        i
    };
    let mut new_chunks = Vec::new();
    let mut files = Vec::with_capacity(manifest.files.len());
    for (f, cut) in manifest.files.iter().zip(cuts) {
        let one = cut.len() == 1;
        let mut chunks = Vec::with_capacity(cut.len());
        for (sha, _) in cut {
            let loc = match b.places.get(&sha) {
                Some(Place::Known(loc)) => loc.clone(),
                Some(Place::New {
                    slot,
                    at,
                    len,
                    skip,
                    size,
                }) => Loc {
                    pack: b.slots[*slot].sha256.clone(),
                    at: *at,
                    len: *len,
                    skip: *skip,
                    size: *size,
                },
                _ => bail!("chunk {sha} of {} was not packed", f.path),
            };
            if matches!(b.places.get(&sha), Some(Place::New { .. })) {
                new_chunks.push((sha.clone(), loc.clone()));
            }
            chunks.push(Chunk {
                pack: pack_index(&loc.pack),
                at: loc.at,
                len: loc.len,
                skip: loc.skip,
                size: loc.size,
                sha256: (!one).then_some(sha),
            });
        }
        files.push(PackedFile {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
            size: f.size,
            mode: f.mode,
            symlink: f.symlink.clone(),
            chunks,
        });
    }
    new_chunks.sort_by(|a, b| a.0.cmp(&b.0));
    new_chunks.dedup_by(|a, b| a.0 == b.0);
    Ok(Built {
        manifest: RemoteManifest {
            version: VERSION,
            packs,
            files,
        },
        packs: b.slots,
        chunks: new_chunks,
        reused_bytes: b.reused,
        packed_bytes: b.packed,
    })
}

/// A local blob whose bytes do not hash to its name (damaged on disk):
/// removed, so the next run of the job stores it afresh, and reported.
fn corrupt_blob(cas: &Cas, f: &FileEntry) -> anyhow::Error {
    let path = cas.blob_path(&f.sha256);
    let _ = fs::remove_file(&path);
    anyhow!(
        "the local cache blob of {} ({}) is damaged (its bytes do not hash to its name); removed it, so the next run of the job stores it again",
        f.path,
        path.display()
    )
}

/// A pack a manifest names that the remote does not have (the caller
/// forgets what its index says about it).
#[derive(Debug)]
pub struct MissingPack(pub String);

impl std::fmt::Display for MissingPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the remote manifest names pack {}, which the remote does not have",
            self.0
        )
    }
}

impl std::error::Error for MissingPack {}

/// One use of a chunk: file `file`'s chunk number `chunk`, at `offset` in
/// the file.
#[derive(Debug, Clone, Copy)]
struct Use {
    file: usize,
    chunk: usize,
    offset: u64,
}

/// One ranged read: `len` bytes of pack `pack` from `start`, holding the
/// frames `(at, len)` and what each is needed for.
#[derive(Debug)]
struct Read_ {
    pack: usize,
    start: u64,
    len: u64,
    frames: Vec<((u64, u64), Vec<Use>)>,
}

/// A file of several chunks, assembled in a temporary file.
struct Assembly {
    tmp: PathBuf,
    file: Option<fs::File>,
    left: usize,
}

/// Downloads into `cas` every file of `m` (a checked version 2 manifest)
/// for which `want(sha)` holds (see the module doc). Returns where the
/// remote holds each chunk of the manifest, for the local index.
pub async fn download(
    view: &dyn RemoteView,
    cas: &Cas,
    m: &RemoteManifest,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Loc)>> {
    let m = Arc::new(m.clone());
    // The files to fetch, once each.
    let mut seen = std::collections::HashSet::new();
    let mut needed = Vec::new();
    for (i, f) in m.files.iter().enumerate() {
        if f.symlink.is_none() && want(&f.sha256) && seen.insert(f.sha256.as_str()) {
            needed.push(i);
        }
    }
    // Frames by pack, each with the chunk uses it serves.
    let mut frames: BTreeMap<(usize, u64, u64), Vec<Use>> = BTreeMap::new();
    for &i in &needed {
        let f = &m.files[i];
        if f.size == 0 {
            cas.put_fetched(&f.sha256, b"")?;
            continue;
        }
        let mut offset = 0;
        for (c, chunk) in f.chunks.iter().enumerate() {
            frames
                .entry((chunk.pack as usize, chunk.at, chunk.len))
                .or_default()
                .push(Use {
                    file: i,
                    chunk: c,
                    offset,
                });
            offset += chunk.size;
        }
    }
    // Neighbouring frames of a pack in one read.
    let mut reads: Vec<Read_> = Vec::new();
    for ((pack, at, len), uses) in frames {
        match reads.last_mut() {
            Some(r)
                if r.pack == pack
                    && at >= r.start + r.len
                    && at - (r.start + r.len) <= 64 << 10
                    && at + len - r.start <= READ =>
            {
                r.len = at + len - r.start;
                r.frames.push(((at, len), uses));
            }
            _ => reads.push(Read_ {
                pack,
                start: at,
                len,
                frames: vec![((at, len), uses)],
            }),
        }
    }
    // Files of several chunks are assembled in place.
    let assemblies: Arc<Mutex<HashMap<usize, Assembly>>> = Arc::new(Mutex::new(HashMap::new()));
    for &i in &needed {
        let f = &m.files[i];
        if f.chunks.len() > 1 {
            // Beside the blob it becomes, named as a staged write.
            let dir = cas.blob_path(&f.sha256).parent().map(Path::to_path_buf);
            let dir = dir.unwrap_or_else(|| cas.root().to_path_buf());
            fs::create_dir_all(&dir)
                .map_err(|e| anyhow!(sparkwing_schema::StorageFault::from_io(&dir, &e)))?;
            let tmp = dir.join(format!(
                ".tmp-fetch-{}-{}",
                std::process::id(),
                crate::util::new_run_id()
            ));
            assemblies.lock().unwrap().insert(
                i,
                Assembly {
                    tmp,
                    file: None,
                    left: f.chunks.len(),
                },
            );
        }
    }
    let root = cas.root().to_path_buf();
    let outcome = futures_util::stream::iter(reads)
        .map(|r| {
            let (m, assemblies, root) = (Arc::clone(&m), Arc::clone(&assemblies), root.clone());
            async move {
                let pack = m.packs[r.pack].clone();
                let got = view
                    .blob_range(&pack, r.start, r.len)
                    .await
                    .map_err(|e| anyhow!("reading pack {pack}: {}", scrub(&e.message)))?;
                let Some(bytes) = got else {
                    return Err(anyhow!(MissingPack(pack)));
                };
                if bytes.len() as u64 != r.len {
                    bail!(
                        "pack {pack} is corrupt or truncated: {} bytes from {} where the manifest places {}",
                        bytes.len(),
                        r.start,
                        r.len
                    );
                }
                tokio::task::spawn_blocking(move || {
                    unpack(&Cas::at(&root), &m, &pack, &r, &bytes, &assemblies)
                })
                .await?
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await;
    let leftovers: Vec<PathBuf> = assemblies
        .lock()
        .unwrap()
        .drain()
        .map(|(_, a)| a.tmp)
        .collect();
    for tmp in leftovers {
        let _ = fs::remove_file(tmp);
    }
    outcome?;
    // Not synced: nothing is committed here that a crash could make name
    // a missing blob (a blob torn by a crash fails the SHA-256 check every
    // restore makes, is removed and fetched again).
    // Where the chunks of the files fetched (and so verified) lie; never
    // what a manifest says of files this restore did not check.
    let mut locs = Vec::new();
    for f in needed.iter().map(|&i| &m.files[i]) {
        for c in &f.chunks {
            let sha = c.sha256.clone().unwrap_or_else(|| f.sha256.clone());
            locs.push((
                sha,
                Loc {
                    pack: m.packs[c.pack as usize].clone(),
                    at: c.at,
                    len: c.len,
                    skip: c.skip,
                    size: c.size,
                },
            ));
        }
    }
    Ok(locs)
}

/// A frame's plain bytes, decompressed under [`MAX_FRAME_PLAIN`].
fn decode_frame(
    z: &mut zstd::bulk::Decompressor<'_>,
    pack: &str,
    at: u64,
    stored: &[u8],
) -> Result<Vec<u8>> {
    z.decompress(stored, MAX_FRAME_PLAIN as usize)
        .map_err(|e| anyhow!("pack {pack} is corrupt: the frame at {at} does not decompress ({e})"))
}

/// Largest file [`files_from`] reads (in memory).
const FILES_FROM_MAX: u64 = 1 << 30;

/// Every file of `m` (checked) with its bytes, read whole from `object`
/// (a pack's or, for version 1, a blob's bytes by name) and verified by
/// SHA-256. In memory: for checkers and tests, not for restores.
pub fn files_from<B: AsRef<[u8]>>(
    m: &RemoteManifest,
    object: impl Fn(&str) -> Option<B>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut z = zstd::bulk::Decompressor::new().context("starting zstd")?;
    let mut out = Vec::new();
    for f in m.files.iter().filter(|f| f.symlink.is_none()) {
        let bytes = if m.version == 1 {
            object(&f.sha256)
                .ok_or_else(|| anyhow!("blob {} of {} is missing", f.sha256, f.path))?
                .as_ref()
                .to_vec()
        } else {
            if f.size > FILES_FROM_MAX {
                bail!(
                    "file {} is {} bytes, more than the {FILES_FROM_MAX} read in memory",
                    f.path,
                    f.size
                );
            }
            let mut bytes = Vec::with_capacity(f.size as usize);
            for c in &f.chunks {
                let name = &m.packs[c.pack as usize];
                let pack = object(name).ok_or_else(|| anyhow!(MissingPack(name.clone())))?;
                let stored = pack
                    .as_ref()
                    .get(c.at as usize..(c.at + c.len) as usize)
                    .ok_or_else(|| anyhow!("pack {name} is truncated: no frame at {}", c.at))?;
                let plain = decode_frame(&mut z, name, c.at, stored)?;
                let part = plain
                    .get(c.skip as usize..(c.skip + c.size) as usize)
                    .ok_or_else(|| anyhow!("pack {name}: the frame at {} is short", c.at))?;
                bytes.extend_from_slice(part);
            }
            bytes
        };
        let got = hex(&Sha256::digest(&bytes));
        if got != f.sha256 {
            bail!(
                "file {} hashes to {got}, the manifest says {}",
                f.path,
                f.sha256
            );
        }
        out.push((f.path.clone(), bytes));
    }
    Ok(out)
}

/// Decompresses the frames of one read and stores the chunks they serve.
fn unpack(
    cas: &Cas,
    m: &RemoteManifest,
    pack: &str,
    r: &Read_,
    bytes: &[u8],
    assemblies: &Mutex<HashMap<usize, Assembly>>,
) -> Result<()> {
    let mut z = zstd::bulk::Decompressor::new().context("starting zstd")?;
    for ((at, len), uses) in &r.frames {
        let from = (at - r.start) as usize;
        let stored = &bytes[from..from + *len as usize];
        let plain = decode_frame(&mut z, pack, *at, stored)?;
        for u in uses {
            let f = &m.files[u.file];
            let c = &f.chunks[u.chunk];
            let Some(part) = plain.get(c.skip as usize..(c.skip + c.size) as usize) else {
                bail!(
                    "pack {pack} is corrupt or the manifest is wrong: the frame at {at} holds {} bytes, file {} wants {} from {}",
                    plain.len(),
                    f.path,
                    c.size,
                    c.skip
                );
            };
            if f.chunks.len() == 1 {
                cas.put_fetched(&f.sha256, part)?;
                continue;
            }
            let want = c.sha256.as_deref().unwrap_or("");
            let got = hex(&Sha256::digest(part));
            if got != want {
                bail!(
                    "pack {pack} is corrupt: a chunk of {} hashes to {got}, the manifest says {want}",
                    f.path
                );
            }
            let mut all = assemblies.lock().unwrap();
            let a = all
                .get_mut(&u.file)
                .ok_or_else(|| anyhow!("file {} is not being assembled", f.path))?;
            if a.file.is_none() {
                a.file = Some(
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&a.tmp)
                        .map_err(|e| {
                            anyhow!(sparkwing_schema::StorageFault::from_io(&a.tmp, &e))
                        })?,
                );
            }
            let file = a.file.as_ref().expect("opened");
            file.write_all_at(part, u.offset)
                .map_err(|e| anyhow!(sparkwing_schema::StorageFault::from_io(&a.tmp, &e)))?;
            a.left -= 1;
            if a.left == 0 {
                let done = all.remove(&u.file).expect("present");
                drop(all);
                drop(done.file);
                cas.adopt(&f.sha256, &done.tmp)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkwing_sync::{ObjectStoreTarget, ObjectView};

    /// Deterministic bytes: `n` of them from `seed`, compressible when
    /// `text` (like source files), not otherwise.
    fn bytes(seed: u64, n: usize, text: bool) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if text {
                    b"abcdefgh ijkl\n"[(x % 14) as usize]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    /// A CAS holding `files` and their manifest.
    fn stored(home: &Path, files: &[(&str, Vec<u8>)]) -> Manifest {
        let cas = Cas::new(home);
        let src = home.join("src");
        fs::create_dir_all(&src).unwrap();
        let mut out = Vec::new();
        for (i, (path, body)) in files.iter().enumerate() {
            let p = src.join(i.to_string());
            fs::write(&p, body).unwrap();
            let (sha, size) = cas.put_file(&p).unwrap();
            out.push(FileEntry {
                path: path.to_string(),
                sha256: sha,
                size,
                mode: 0o644,
                symlink: None,
            });
        }
        Manifest {
            version: 1,
            files: out,
        }
    }

    /// The packs a build wrote, placed where a remote keeps them.
    fn publish(built: &Built, remote: &Path) {
        for p in &built.packs {
            let dest = remote.join(sparkwing_sync::layout::blob(&p.sha256));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(&p.path, dest).unwrap();
        }
    }

    fn read_pack(remote: &Path) -> impl Fn(&str) -> Option<Vec<u8>> + '_ {
        move |name| fs::read(remote.join(sparkwing_sync::layout::blob(name))).ok()
    }

    fn workload() -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| {
                (
                    format!("out/small/{i}"),
                    bytes(i, 200 + (i as usize * 37) % 9000, i % 3 != 0),
                )
            })
            .collect();
        files.push(("out/empty".into(), Vec::new()));
        files.push(("out/big".into(), bytes(7, 9 << 20, false)));
        files.push(("out/big-copy".into(), bytes(7, 9 << 20, false)));
        files
    }

    fn as_refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
        files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect()
    }

    #[test]
    fn a_build_reads_back_byte_for_byte_and_names_each_chunk_once() {
        let home = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let files = workload();
        let m = stored(home.path(), &as_refs(&files));
        let built = build(home.path(), &m, &HashMap::new()).unwrap();
        built.manifest.check().unwrap();
        assert_eq!(built.manifest.local(), m);
        // The big file is cut into several chunks; its copy is named, not
        // packed again; the small files share frames.
        let big = &built.manifest.files[301];
        assert!(big.chunks.len() > 3, "{} chunks", big.chunks.len());
        assert_eq!(built.manifest.files[302].chunks, big.chunks);
        assert!(built.manifest.files[300].chunks.is_empty());
        let frames: std::collections::HashSet<_> = built.manifest.files[..300]
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| (c.pack, c.at)))
            .collect();
        assert!(
            frames.len() < 10,
            "{} frames for 300 small files",
            frames.len()
        );
        let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
        assert_eq!(built.packed_bytes + built.reused_bytes, total);
        assert_eq!(built.reused_bytes, 9 << 20);
        publish(&built, remote.path());
        let got = files_from(&built.manifest, read_pack(remote.path())).unwrap();
        let want: Vec<_> = files.iter().map(|(p, b)| (p.clone(), b.clone())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_edit_in_a_large_file_packs_only_the_chunks_around_it() {
        let home = tempfile::tempdir().unwrap();
        let mut files = workload();
        let m = stored(home.path(), &as_refs(&files));
        let first = build(home.path(), &m, &HashMap::new()).unwrap();
        let known: HashMap<String, Loc> = first.chunks.iter().cloned().collect();
        // A few bytes in the middle of the big file, one small file.
        files[301].1[4 << 20] ^= 0xff;
        files[5].1.push(b'!');
        let m2 = stored(home.path(), &as_refs(&files));
        let second = build(home.path(), &m2, &known).unwrap();
        assert!(
            second.packed_bytes <= 2 * u64::from(CDC.2) + 10_000,
            "an edit re-packed {} bytes",
            second.packed_bytes
        );
        assert_eq!(second.packs.len(), 1);
        // The new manifest names the old pack(s) and the new one.
        assert!(second.manifest.packs.len() >= 2);
        let remote = tempfile::tempdir().unwrap();
        publish(&first, remote.path());
        publish(&second, remote.path());
        let got = files_from(&second.manifest, read_pack(remote.path())).unwrap();
        assert_eq!(got[301].1, files[301].1);
        assert_eq!(got[5].1, files[5].1);
    }

    #[tokio::test]
    async fn a_download_is_verified_and_a_damaged_pack_stores_nothing_of_its_files() {
        let home = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let files = workload();
        let m = stored(home.path(), &as_refs(&files));
        let built = build(home.path(), &m, &HashMap::new()).unwrap();
        publish(&built, remote.path());
        let view = ObjectView::new(Arc::new(ObjectStoreTarget::filesystem(remote.path())));
        let fresh = tempfile::tempdir().unwrap();
        let cas = Cas::new(fresh.path());
        let locs = download(&view, &cas, &built.manifest, |_| true)
            .await
            .unwrap();
        for (path, body) in &files {
            let f = built
                .manifest
                .files
                .iter()
                .find(|f| &f.path == path)
                .unwrap();
            assert_eq!(&fs::read(cas.blob_path(&f.sha256)).unwrap(), body, "{path}");
        }
        assert!(locs.len() >= built.chunks.len());
        // No staged file is left beside the blobs.
        for d in fs::read_dir(cas.root()).unwrap().flatten() {
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                assert!(!f.file_name().to_string_lossy().starts_with('.'));
            }
        }

        // Truncated, then one byte flipped: an error naming the pack, and
        // no blob of the big file (assembled from chunks) in the CAS.
        let big = &built.manifest.files[301];
        let pack_of_last = &built.manifest.packs[big.chunks.last().unwrap().pack as usize];
        let path = remote
            .path()
            .join(sparkwing_sync::layout::blob(pack_of_last));
        let good = fs::read(&path).unwrap();
        for damage in ["truncated", "flipped"] {
            let mut bad = good.clone();
            if damage == "truncated" {
                bad.truncate(bad.len() - 10);
            } else {
                let at = big.chunks.last().unwrap().at as usize + 20;
                bad[at] ^= 0x01;
            }
            fs::write(&path, &bad).unwrap();
            let fresh = tempfile::tempdir().unwrap();
            let cas = Cas::new(fresh.path());
            let e = download(&view, &cas, &built.manifest, |_| true)
                .await
                .unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(pack_of_last.as_str()) && e.contains("corrupt"),
                "{damage}: {e}"
            );
            assert!(!cas.blob_path(&big.sha256).exists(), "{damage}");
        }
        fs::remove_file(&path).unwrap();
        let e = download(
            &view,
            &Cas::new(tempfile::tempdir().unwrap().path()),
            &built.manifest,
            |_| true,
        )
        .await
        .unwrap_err();
        assert!(e.downcast_ref::<MissingPack>().is_some(), "{e:#}");
    }

    /// A blob damaged on this disk (same size, other bytes) is never
    /// packed under its name: the build stops, names it and removes it.
    #[test]
    fn a_damaged_local_blob_is_not_packed_and_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        for (i, size) in [(0usize, 5000usize), (1, 6 << 20)] {
            let home = tempfile::tempdir().unwrap();
            let m = stored(home.path(), &[("out/a", bytes(i as u64, size, false))]);
            let blob = Cas::new(home.path()).blob_path(&m.files[0].sha256);
            fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
            let mut body = fs::read(&blob).unwrap();
            body[size / 2] ^= 1;
            fs::write(&blob, body).unwrap();
            let e = build(home.path(), &m, &HashMap::new()).unwrap_err();
            assert!(format!("{e:#}").contains("damaged"), "{e:#}");
            assert!(!blob.exists(), "removed");
            let staged: Vec<_> = fs::read_dir(staging_dir(home.path()))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".pack"))
                .collect();
            assert!(staged.is_empty(), "no half-written pack: {staged:?}");
        }
    }

    /// A small file the target holds is named without reading it: a
    /// re-save reads only what it sends.
    #[test]
    fn a_known_small_file_is_named_unread() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let m = stored(home.path(), &[("out/a", bytes(3, 4000, true))]);
        let first = build(home.path(), &m, &HashMap::new()).unwrap();
        let known: HashMap<String, Loc> = first.chunks.iter().cloned().collect();
        // Damaged now: a read would fail the build ("damaged").
        let blob = Cas::new(home.path()).blob_path(&m.files[0].sha256);
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, bytes(4, 4000, true)).unwrap();
        let second = build(home.path(), &m, &known).unwrap();
        assert_eq!((second.packed_bytes, second.reused_bytes), (0, 4000));
        assert!(second.packs.is_empty());
        assert_eq!(
            second.manifest.files[0].chunks,
            first.manifest.files[0].chunks
        );
    }

    /// A restore tells the index only where the chunks it fetched and
    /// verified lie, never what a manifest says of anything else (a
    /// duplicate entry pointing elsewhere, a file it did not fetch).
    #[tokio::test]
    async fn a_restore_indexes_only_the_chunks_it_verified() {
        let home = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let files = vec![
            ("out/a".to_string(), bytes(1, 3000, true)),
            ("out/b".to_string(), bytes(2, 3000, true)),
        ];
        let m = stored(home.path(), &as_refs(&files));
        let built = build(home.path(), &m, &HashMap::new()).unwrap();
        publish(&built, remote.path());
        let mut hostile = built.manifest.clone();
        // A second entry for `a`'s bytes, placed at junk.
        let mut dup = hostile.files[0].clone();
        dup.path = "out/c".into();
        dup.chunks[0].skip = 17;
        hostile.files.push(dup);
        hostile.check().unwrap();
        let view = ObjectView::new(Arc::new(ObjectStoreTarget::filesystem(remote.path())));
        let fresh = tempfile::tempdir().unwrap();
        let cas = Cas::new(fresh.path());
        // `b` is already here: not fetched, not indexed.
        let b = &hostile.files[1];
        cas.put_fetched(&b.sha256, &files[1].1).unwrap();
        let locs = download(&view, &cas, &hostile, |sha| !cas.blob_path(sha).exists())
            .await
            .unwrap();
        assert_eq!(locs.len(), 1, "{locs:?}");
        assert_eq!(locs[0].0, hostile.files[0].sha256);
        assert_eq!(locs[0].1.skip, built.manifest.files[0].chunks[0].skip);
    }

    #[test]
    fn hostile_manifests_are_refused_with_a_reason() {
        let sha = "a".repeat(64);
        let good = RemoteManifest {
            version: 2,
            packs: vec![sha.clone()],
            files: vec![PackedFile {
                path: "o".into(),
                sha256: sha.clone(),
                size: 10,
                mode: 0o644,
                symlink: None,
                chunks: vec![Chunk {
                    pack: 0,
                    at: 0,
                    len: 20,
                    skip: 0,
                    size: 10,
                    sha256: None,
                }],
            }],
        };
        good.check().unwrap();
        type Damage = fn(&mut RemoteManifest);
        let cases: Vec<(Damage, &str)> = vec![
            (|m| m.version = 3, "newer sparkwing"),
            (|m| m.files[0].chunks[0].pack = 1, "not listed"),
            (|m| m.files[0].size = 11, "hold 10 bytes"),
            (
                |m| m.files[0].chunks[0].skip = u64::MAX,
                "outside the bounds",
            ),
            (|m| m.files[0].chunks[0].len = 0, "outside the bounds"),
            (|m| m.files[0].chunks[0].at = u64::MAX, "outside the bounds"),
            (
                |m| m.files[0].chunks[0].len = u64::MAX,
                "outside the bounds",
            ),
            (|m| m.packs[0] = "../x".into(), "not a SHA-256"),
            (
                |m| {
                    let c = m.files[0].chunks[0].clone();
                    m.files[0].chunks.push(c);
                    m.files[0].size = 20;
                },
                "without a valid SHA-256",
            ),
            (
                |m| m.files[0].chunks[0].sha256 = Some("b".repeat(64)),
                "without a valid SHA-256",
            ),
            (|m| m.version = 1, "names packs"),
        ];
        for (damage, want) in cases {
            let mut m = good.clone();
            damage(&mut m);
            let e = format!("{:#}", m.check().unwrap_err());
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn a_manifest_that_decompresses_too_far_is_refused() {
        let plain = vec![b' '; (8 << 20) + 10];
        let bomb = encode_manifest(&plain).unwrap();
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            bounded_json(&bomb, (8 << 20) + 10).unwrap().len(),
            plain.len()
        );
        let e = bounded_json(&bomb, 8 << 20).unwrap_err();
        assert!(format!("{e:#}").contains("more than"), "{e:#}");
        assert_eq!(&*manifest_json(b"{}").unwrap(), b"{}");
        assert!(manifest_json(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2]).is_err());
    }
}
