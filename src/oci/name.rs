//! Repository names, validated by the distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use super::OciError;

/// The longest repository name accepted (the spec lets registries cap it; distribution uses 255).
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name: `/`-separated components, each matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`. Because `.` may only appear between alphanumerics, no
/// component can be `.` or `..`, so a name can never reach outside its storage prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, OciError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(OciError::InvalidName(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_examples() {
        for good in [
            "a",
            "library/ubuntu",
            "my-org/team.a/app_1",
            "a__b",
            "a---b",
            "0/1/2",
            &"a".repeat(255),
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good:?} should be valid");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_-b",
            "a b",
            "a:b",
            &"a".repeat(256),
        ] {
            assert!(
                bad.parse::<RepoName>().is_err(),
                "{bad:?} should be invalid"
            );
        }
    }
}
