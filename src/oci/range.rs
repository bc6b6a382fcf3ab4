//! Byte ranges: the `Range` header of blob GETs and the `Content-Range` of chunked PATCHes.

use super::OciError;

/// A request's `Range: bytes=…` header, single range only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last` (inclusive), or `bytes=first-` when `last` is `None`.
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// A byte range that cannot be satisfied whatever the length (`bytes=500-0`).
    Invalid,
}

/// The outcome of resolving a [`ByteRange`] against a blob's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Serve `start..end` (end exclusive) with 206.
    Partial { start: u64, end: u64 },
    /// 416: nothing of the range lies within the blob.
    Unsatisfiable,
}

impl ByteRange {
    /// Parses a `Range` header value. `Ok(None)` means "ignore the header and serve it whole"
    /// (multi-range requests and units other than bytes, as RFC 9110 allows).
    pub fn parse_header(value: &str) -> Result<Option<ByteRange>, OciError> {
        let invalid = || OciError::InvalidRange(value.to_string());
        let Some(spec) = value.trim().strip_prefix("bytes=") else {
            return Ok(None);
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let (a, b) = spec.trim().split_once('-').ok_or_else(invalid)?;
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid());
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, true) => Err(invalid()),
            (true, false) => Ok(Some(ByteRange::Suffix(num(b)?))),
            (false, true) => Ok(Some(ByteRange::FromTo {
                first: num(a)?,
                last: None,
            })),
            (false, false) => {
                let (first, last) = (num(a)?, num(b)?);
                if last < first {
                    return Err(invalid());
                }
                Ok(Some(ByteRange::FromTo {
                    first,
                    last: Some(last),
                }))
            }
        }
    }

    pub fn resolve(self, len: u64) -> Resolved {
        match self {
            ByteRange::Invalid => Resolved::Unsatisfiable,
            ByteRange::FromTo { first, last } => {
                if first >= len {
                    return Resolved::Unsatisfiable;
                }
                let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                Resolved::Partial { start: first, end }
            }
            ByteRange::Suffix(n) => {
                if n == 0 || len == 0 {
                    return Resolved::Unsatisfiable;
                }
                Resolved::Partial {
                    start: len.saturating_sub(n),
                    end: len,
                }
            }
        }
    }
}

/// A chunk's position in a chunked upload: `Content-Range: <start>-<end>` (inclusive). The
/// distribution spec writes it without a unit; `bytes ` prefixes are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
}

impl ContentRange {
    pub fn parse(value: &str) -> Result<ContentRange, OciError> {
        let invalid = || OciError::InvalidRange(value.to_string());
        let v = value.trim();
        let v = v.strip_prefix("bytes").map(str::trim_start).unwrap_or(v);
        let v = v.strip_prefix('=').unwrap_or(v);
        let v = v.split('/').next().unwrap_or(v);
        let (a, b) = v.split_once('-').ok_or_else(invalid)?;
        let start = a.trim().parse::<u64>().map_err(|_| invalid())?;
        let end = b.trim().parse::<u64>().map_err(|_| invalid())?;
        if end < start {
            return Err(invalid());
        }
        Ok(ContentRange { start, end })
    }

    /// The chunk's length in bytes (a range always covers at least one byte), or `None` when
    /// it is longer than a `u64` counts (`0-18446744073709551615`): no upload can take it.
    pub fn length(&self) -> Option<u64> {
        (self.end - self.start).checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header_forms() {
        assert_eq!(
            ByteRange::parse_header("bytes=0-9").unwrap(),
            Some(ByteRange::FromTo {
                first: 0,
                last: Some(9)
            })
        );
        assert_eq!(
            ByteRange::parse_header("bytes=5-").unwrap(),
            Some(ByteRange::FromTo {
                first: 5,
                last: None
            })
        );
        assert_eq!(
            ByteRange::parse_header("bytes=-3").unwrap(),
            Some(ByteRange::Suffix(3))
        );
        assert_eq!(ByteRange::parse_header("bytes=0-1,4-5").unwrap(), None);
        assert_eq!(ByteRange::parse_header("items=0-1").unwrap(), None);
        assert!(ByteRange::parse_header("bytes=9-1").is_err());
        assert!(ByteRange::parse_header("bytes=x-1").is_err());
    }

    #[test]
    fn resolution_against_length() {
        let r = |s| ByteRange::parse_header(s).unwrap().unwrap();
        assert_eq!(
            r("bytes=0-9").resolve(5),
            Resolved::Partial { start: 0, end: 5 }
        );
        assert_eq!(
            r("bytes=-3").resolve(10),
            Resolved::Partial { start: 7, end: 10 }
        );
        assert_eq!(
            r("bytes=-30").resolve(10),
            Resolved::Partial { start: 0, end: 10 }
        );
        assert_eq!(r("bytes=10-").resolve(10), Resolved::Unsatisfiable);
        assert_eq!(r("bytes=-0").resolve(10), Resolved::Unsatisfiable);
        assert_eq!(ByteRange::Invalid.resolve(10), Resolved::Unsatisfiable);
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(
            ContentRange::parse("0-1023").unwrap(),
            ContentRange {
                start: 0,
                end: 1023
            }
        );
        assert_eq!(
            ContentRange::parse("bytes 10-19/*").unwrap(),
            ContentRange { start: 10, end: 19 }
        );
        assert_eq!(ContentRange::parse("5-5").unwrap().length(), Some(1));
        assert!(ContentRange::parse("9-1").is_err());
        assert!(ContentRange::parse("abc").is_err());
    }

    #[test]
    fn numbers_at_the_edge_of_u64_do_not_wrap() {
        let max = u64::MAX;
        assert_eq!(
            ContentRange::parse(&format!("0-{max}")).unwrap().length(),
            None
        );
        assert_eq!(
            ContentRange::parse(&format!("1-{max}")).unwrap().length(),
            Some(max)
        );
        assert_eq!(
            ContentRange::parse(&format!("{max}-{max}"))
                .unwrap()
                .length(),
            Some(1)
        );
        assert!(ContentRange::parse("0-18446744073709551616").is_err());
        let r = |s: String| ByteRange::parse_header(&s).unwrap().unwrap();
        assert_eq!(
            r(format!("bytes=0-{max}")).resolve(5),
            Resolved::Partial { start: 0, end: 5 }
        );
        assert_eq!(
            r(format!("bytes=-{max}")).resolve(5),
            Resolved::Partial { start: 0, end: 5 }
        );
        assert_eq!(
            r(format!("bytes={max}-")).resolve(5),
            Resolved::Unsatisfiable
        );
        assert_eq!(
            r(format!("bytes={max}-{max}")).resolve(max),
            Resolved::Unsatisfiable
        );
        assert!(ByteRange::parse_header("bytes=0-18446744073709551616").is_err());
    }
}
