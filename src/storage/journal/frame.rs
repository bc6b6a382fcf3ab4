//! The journal's records and how they are framed on disk, and applying one change to the files.
//!
//! A frame is its payload's length (u32, little-endian), the payload's CRC-32, then the payload:
//! JSON of a [`Frame`]. A torn last frame (a power loss mid-write) fails its length or checksum
//! and ends the file's reading there; nothing after it was acknowledged.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One change to the layout, by paths relative to the storage root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// The file holds exactly these bytes.
    Write {
        path: String,
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
    },
    /// The file is gone (and directories it leaves empty).
    Delete { path: String },
    /// The file at `from` moved to `to` (a verified upload published as its blob, a blob set
    /// aside by a collection). Only content-addressed targets are moved: a target that exists
    /// holds the same bytes.
    Rename { from: String, to: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "lowercase")]
pub(super) enum Frame {
    /// First in every file: who wrote it, under which boot.
    Header { boot: String, pid: u32 },
    /// Changes applied together, at `ts` (ns since the epoch, taken after applying them).
    Entry { ts: u64, ops: Vec<Op> },
    /// Last, after a checkpoint's `syncfs` failed: the file's changes may not all be on disk
    /// although the page cache shows them, so it is replayed even in the boot that wrote it.
    Unsynced,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

pub(super) fn encode(frame: &Frame) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(frame).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The whole frames at the start of `bytes`, up to the first torn or corrupt one.
pub(super) fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(8..8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice(payload) {
            Ok(frame) => frames.push(frame),
            Err(_) => break,
        }
        rest = &rest[8 + len..];
    }
    frames
}

/// Tries `f` again (up to 3 times) when it fails with `NotFound`: a directory it had just
/// created may have been removed as empty by a concurrent delete.
fn retry_vanished_dir<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it), without syncing. The
/// temporary file's name holds a `#`, which listings skip (object_store's own convention).
pub(super) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("a layout file has a directory");
    let name = path.file_name().expect("a layout file has a name");
    let temp = dir.join(format!(
        "{}#{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    retry_vanished_dir(|| {
        std::fs::create_dir_all(dir)?;
        // A write that fails part-way (a full disk) leaves no temporary file behind either.
        std::fs::write(&temp, bytes)
            .and_then(|()| std::fs::rename(&temp, path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
    })
}

/// Removes `path` (missing is fine) and the directories it leaves empty, up to `root`.
pub(super) fn delete_file(root: &Path, path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        // Fails (and ends the walk) on the first directory that is not empty.
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Moves `from` to `to`, creating `to`'s directories.
pub(super) fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    let dir = to.parent().expect("a layout file has a directory");
    if !from.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is gone", from.display()),
        ));
    }
    retry_vanished_dir(|| {
        std::fs::create_dir_all(dir)?;
        std::fs::rename(from, to)
    })
}

impl Op {
    /// Applies the change to the files below `root`, without syncing.
    pub(super) fn apply(&self, root: &Path) -> io::Result<()> {
        match self {
            Op::Write { path, bytes } => write_file(&root.join(path), bytes),
            Op::Delete { path } => delete_file(root, &root.join(path)),
            Op::Rename { from, to } => move_file(&root.join(from), &root.join(to)),
        }
    }
}
