//! What storage keeps about an upload in progress ([`UploadRecord`]) and how it is encoded: two
//! checksummed slots on local disk, plain JSON on object stores. Kept apart from the upload
//! operations because this is a format other processes and versions read, tested on its own.

use serde::{Deserialize, Serialize};

use super::parts_state::PartsState;
use super::{Result, StorageError};

/// What storage keeps about an upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    /// The repository the upload belongs to (an upload id is useless in another one).
    pub repo: String,
    /// The digest algorithm hashed while streaming (`sha256`, `sha512`).
    pub algorithm: String,
    /// RFC 3339 time the upload was started.
    pub started_at: String,
    /// Bytes accepted: the next chunk starts here.
    pub offset: u64,
    /// Bumped at every rewrite, so a process holding the upload in memory can tell whether
    /// another one wrote it since.
    pub generation: u64,
    /// The hash's running state after `hash.offset` bytes (at most `offset`; on local disk the
    /// bytes between are re-hashed from the file on resume).
    #[serde(default)]
    pub hash: Option<HashRecord>,
    /// On object stores: the multipart upload and the staged bytes.
    #[serde(default)]
    pub parts: Option<PartsState>,
    /// The bytes are complete at the upload's data path (on object stores the multipart upload
    /// was completed, and `parts` describes one that no longer exists) but were not committed:
    /// a retried `PUT` commits them without finishing again, and nothing can be appended.
    /// `hash` then covers all `offset` bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HashRecord {
    pub offset: u64,
    /// Hex of the hasher's serialized state.
    pub state: String,
}

/// Size of each of the two slots of a local record file.
const RECORD_SLOT: usize = 4096;

/// A record as written on local disk: slot `generation % 2` of the record file, holding the
/// JSON's length, the first 8 bytes of its SHA-256 (a torn write is detected, and the other slot
/// used) and the JSON. Answers the slot's offset and bytes.
pub(super) fn record_slot(record: &UploadRecord) -> Result<(u64, Vec<u8>)> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(record).expect("a record serializes");
    if json.len() + 12 > RECORD_SLOT {
        return Err(StorageError::Corrupt {
            path: "upload record".into(),
            reason: format!("{} bytes do not fit a record slot", json.len()),
        });
    }
    let mut slot = Vec::with_capacity(RECORD_SLOT);
    slot.extend_from_slice(&(json.len() as u32).to_le_bytes());
    slot.extend_from_slice(&sha2::Sha256::digest(&json)[..8]);
    slot.extend_from_slice(&json);
    slot.resize(RECORD_SLOT, 0);
    Ok(((record.generation % 2) * RECORD_SLOT as u64, slot))
}

/// Reads a record kept on an object store: plain JSON.
pub(super) fn decode_record(bytes: &[u8]) -> std::result::Result<UploadRecord, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Reads a local record file: the newest intact slot. (Never guessed from the content: a slot
/// starts with its length, whose low byte may well be `{`.)
pub(super) fn decode_record_slots(bytes: &[u8]) -> std::result::Result<UploadRecord, String> {
    use sha2::Digest as _;
    let newest = bytes
        .chunks(RECORD_SLOT)
        .filter_map(|slot| {
            let len = u32::from_le_bytes(slot.get(..4)?.try_into().ok()?) as usize;
            let json = slot.get(12..12 + len)?;
            if len == 0 || sha2::Sha256::digest(json)[..8] != slot[4..12] {
                return None;
            }
            serde_json::from_slice::<UploadRecord>(json).ok()
        })
        .max_by_key(|r| r.generation);
    newest.ok_or_else(|| "no intact record slot".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64) -> UploadRecord {
        UploadRecord {
            repo: "r".into(),
            algorithm: "sha256".into(),
            started_at: String::new(),
            offset: generation * 100,
            generation,
            hash: None,
            parts: None,
            completed: false,
        }
    }

    #[test]
    fn the_newest_intact_slot_wins() {
        let mut file = vec![0u8; 2 * RECORD_SLOT];
        for generation in [1, 2, 3] {
            let (offset, slot) = record_slot(&record(generation)).unwrap();
            file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
        }
        assert_eq!(decode_record_slots(&file).unwrap().generation, 3);
        // Generation 4 torn half-way (a power loss): generation 3 stays readable.
        let (offset, slot) = record_slot(&record(4)).unwrap();
        file[offset as usize..offset as usize + 20].copy_from_slice(&slot[..20]);
        assert_eq!(decode_record_slots(&file).unwrap().generation, 3);
        assert!(decode_record_slots(&[0u8; 10]).is_err());
        let json = serde_json::to_vec(&record(7)).unwrap();
        assert_eq!(decode_record(&json).unwrap().generation, 7);
    }

    #[test]
    fn a_slot_whose_length_looks_like_json_is_still_a_slot() {
        // Found by the end-to-end tests: a record of 123 + 256k bytes starts with `{`.
        let mut long = record(1);
        for pad in 0..400 {
            long.started_at = "x".repeat(pad);
            let (offset, slot) = record_slot(&long).unwrap();
            if slot[0] == b'{' {
                let mut file = vec![0u8; 2 * RECORD_SLOT];
                file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
                let mut even = long.clone();
                even.generation = 2;
                let (offset, slot) = record_slot(&even).unwrap();
                file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
                assert_eq!(decode_record_slots(&file).unwrap(), even);
                return;
            }
        }
        panic!("no padding gave a slot starting with '{{'");
    }
}
