//! The durable state of an object-store upload's bytes: its multipart parts and staged pieces,
//! as the upload's record holds them. Apart from the writer because it is a record format too
//! (read by other processes and versions, checked before it is trusted), not only writer state.

use serde::{Deserialize, Serialize};

/// The durable part of an object-store upload: enough for another process to continue it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartsState {
    pub multipart_id: String,
    /// The `content_id` (ETag) of each part sent, in order.
    pub parts: Vec<String>,
    /// The part numbers of `parts`, when they are not simply 1, 2, 3, … (a holder that lost
    /// its lock may have sent parts under numbers in between: see `storage::lock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<u32>,
    /// Bytes in those parts.
    pub parts_len: u64,
    /// Staged pieces after the parts, in order.
    pub staged: Vec<Staged>,
}

/// Bytes staged as an object of their own: where they start, how many, and the fencing token
/// of the holder that staged them (part of the object's name, see `layout::upload_staged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StagedRepr", into = "StagedRepr")]
pub struct Staged {
    pub offset: u64,
    pub len: u64,
    pub token: u64,
}

/// A staged piece as recorded: `[offset, len]` without a token (as earlier versions wrote it),
/// `[offset, len, token]` with one.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StagedRepr {
    Fenced(u64, u64, u64),
    Plain(u64, u64),
}

impl From<StagedRepr> for Staged {
    fn from(r: StagedRepr) -> Self {
        match r {
            StagedRepr::Fenced(offset, len, token) => Staged { offset, len, token },
            StagedRepr::Plain(offset, len) => Staged {
                offset,
                len,
                token: 0,
            },
        }
    }
}

impl From<Staged> for StagedRepr {
    fn from(s: Staged) -> Self {
        match s.token {
            0 => StagedRepr::Plain(s.offset, s.len),
            token => StagedRepr::Fenced(s.offset, s.len, token),
        }
    }
}

impl PartsState {
    /// The number of part `index` (0-based).
    pub fn part_number(&self, index: usize) -> u32 {
        self.numbers.get(index).copied().unwrap_or(index as u32 + 1)
    }

    /// The highest part number recorded (0: none).
    pub fn last_part_number(&self) -> u32 {
        match self.parts.len() {
            0 => 0,
            n => self.part_number(n - 1),
        }
    }

    /// Records a part sent under `number`.
    pub(super) fn push_part(&mut self, number: u32, content_id: String) {
        let positional = number as usize == self.parts.len() + 1;
        if !positional && self.numbers.is_empty() {
            self.numbers = (1..=self.parts.len() as u32).collect();
        }
        if !self.numbers.is_empty() {
            self.numbers.push(number);
        }
        self.parts.push(content_id);
    }

    /// The parts as `(number, content id)`, for completing the upload.
    pub fn numbered(&self) -> Vec<(u32, String)> {
        (0..self.parts.len())
            .map(|i| (self.part_number(i), self.parts[i].clone()))
            .collect()
    }

    /// Whether the parts are numbered 1, 2, 3, … (what object_store's completion assumes).
    pub fn is_positional(&self) -> bool {
        self.numbers.is_empty()
    }
    /// Bytes in the staged pieces.
    pub(super) fn staged_len(&self) -> u64 {
        self.staged.iter().map(|piece| piece.len).sum()
    }

    /// Checks that the parts and staged pieces hold exactly the recorded `offset` bytes, the
    /// pieces following each other, with arithmetic that cannot wrap: a record is input too
    /// (another process or version wrote it, or a hand), and its numbers are summed later.
    pub fn check(&self, offset: u64) -> std::result::Result<(), String> {
        if !self.numbers.is_empty() {
            if self.numbers.len() != self.parts.len() {
                return Err(format!(
                    "{} part numbers for {} parts",
                    self.numbers.len(),
                    self.parts.len()
                ));
            }
            if self.numbers.windows(2).any(|w| w[0] >= w[1])
                || self.numbers.first() == Some(&0)
                || self.numbers.last() > Some(&super::MAX_PART_NUMBER)
            {
                return Err("part numbers are not increasing within 1..=10000".into());
            }
        }
        let mut end = self.parts_len;
        for &Staged {
            offset: at, len, ..
        } in &self.staged
        {
            if at != end {
                return Err(format!("staged piece at {at} where {end} was expected"));
            }
            end = end
                .checked_add(len)
                .ok_or_else(|| format!("staged piece of {len} bytes at {at} overflows"))?;
        }
        if end != offset {
            return Err(format!(
                "parts and staged pieces hold {end} bytes, the record counts {offset}"
            ));
        }
        Ok(())
    }
}
