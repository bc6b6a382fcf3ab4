//! htpasswd users: the file format of Apache's `htpasswd`, bcrypt entries only.
//!
//! A bcrypt check costs tens to hundreds of milliseconds by design, and a busy CI sends a
//! `Authorization` header with every request; so a successful check is remembered for a short
//! while as a salted SHA-256 of the password, compared in constant time. The file is re-read
//! when it changes (checked at most once a second), which also forgets every remembered check.
//! Other hash kinds (DES-crypt from `htpasswd -d`, MD5 `$apr1$`, SHA-1 `{SHA}`, plain text) are
//! refused when the file is loaded: they are weak, and silently rejecting those users at
//! login would be a puzzle.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// How long a successful password check is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(120);
/// How often the file's modification time is looked at.
const STAT_EVERY: Duration = Duration::from_secs(1);
/// bcrypt only hashes a password's first 72 bytes: a longer one would log in with any suffix
/// (or none), so `berth htpasswd` refuses to set one and logins with one are refused.
pub const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Debug, Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "htpasswd file {path}, line {line}: user {user:?} has a {kind} entry, which berth does \
         not accept (bcrypt only); re-create it with `berth htpasswd {path} {user}` (or \
         `htpasswd -B {path} {user}`)"
    )]
    WeakHash {
        path: PathBuf,
        line: usize,
        user: String,
        kind: &'static str,
    },
    #[error("htpasswd file {path}, line {line}: not `user:hash`")]
    Malformed { path: PathBuf, line: usize },
}

/// A check under way: the user and the password's fingerprint.
type CheckKey = (String, [u8; 32]);

/// The users of one htpasswd file.
pub struct Htpasswd {
    path: PathBuf,
    users: RwLock<Users>,
    remembered: Mutex<HashMap<String, Remembered>>,
    /// Checks under way, by user and fingerprint: the same credentials arriving again meanwhile
    /// (a CI fleet starting at once) wait for that check rather than hashing again.
    in_flight: Mutex<HashMap<CheckKey, Arc<tokio::sync::OnceCell<bool>>>>,
    /// Per process, so that remembered fingerprints mean nothing outside it.
    salt: [u8; 32],
}

struct Users {
    hashes: HashMap<String, String>,
    /// Checked for unknown users at the highest cost of the file's entries, so that a login
    /// with an unknown name takes as long as one with a known name. Made on first use, on the
    /// blocking pool (a bcrypt hash costs as much as a check).
    decoy: std::sync::OnceLock<String>,
    decoy_cost: u32,
    modified: Option<SystemTime>,
    len: u64,
    checked_at: Instant,
}

struct Remembered {
    fingerprint: [u8; 32],
    /// The entry the password was checked against: a changed entry is checked anew.
    hash: String,
    until: Instant,
}

/// The kind of a non-bcrypt entry, for the refusal message.
fn weak_kind(hash: &str) -> Option<&'static str> {
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        None
    } else if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        Some("MD5")
    } else if hash.starts_with("{SHA}") {
        Some("SHA-1")
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        Some("SHA-crypt")
    } else if hash.len() == 13 {
        Some("DES-crypt")
    } else {
        Some("plain-text or unknown")
    }
}

/// Parses an htpasswd file's text; every entry must be bcrypt.
fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':').ok_or(HtpasswdError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
        })?;
        if let Some(kind) = weak_kind(hash) {
            return Err(HtpasswdError::WeakHash {
                path: path.to_path_buf(),
                line: i + 1,
                user: user.to_string(),
                kind,
            });
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

fn read(path: &Path) -> Result<Users, HtpasswdError> {
    let read_error = |source| HtpasswdError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let hashes = parse(path, &text)?;
    // `$2y$05$…`: the cost is the number between the second and third `$`.
    let decoy_cost = hashes
        .values()
        .filter_map(|h| h.get(4..6)?.parse().ok())
        .max()
        .unwrap_or(bcrypt::DEFAULT_COST);
    Ok(Users {
        hashes,
        decoy: std::sync::OnceLock::new(),
        decoy_cost,
        modified: meta.modified().ok(),
        len: meta.len(),
        checked_at: Instant::now(),
    })
}

impl Htpasswd {
    /// Loads `path`, refusing weak entries.
    pub fn open(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let users = read(path)?;
        let mut salt = [0u8; 32];
        openssl::rand::rand_bytes(&mut salt).expect("the system has a random source");
        Ok(Htpasswd {
            path: path.to_path_buf(),
            users: RwLock::new(users),
            remembered: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            salt,
        })
    }

    /// Re-reads the file if it changed (looked at once a second; the read happens outside the
    /// lock, so requests go on meanwhile). A file that became invalid is reported and the users
    /// loaded before are kept: a typo must not lock everybody out, nor let anybody in.
    fn refresh(&self) {
        if self
            .users
            .read()
            .expect("not poisoned")
            .checked_at
            .elapsed()
            < STAT_EVERY
        {
            return;
        }
        {
            let mut users = self.users.write().expect("not poisoned");
            if users.checked_at.elapsed() < STAT_EVERY {
                return;
            }
            // Only this caller looks at the file in this second.
            users.checked_at = Instant::now();
            match std::fs::metadata(&self.path) {
                Ok(meta) if meta.modified().ok() == users.modified && meta.len() == users.len => {
                    return
                }
                Ok(_) => {}
                Err(_) => {
                    log::error!(
                        "htpasswd file {} is gone; keeping the users loaded before",
                        self.path.display()
                    );
                    return;
                }
            }
        }
        match read(&self.path) {
            Ok(fresh) => {
                log::info!(
                    "htpasswd file {} changed: {} user(s)",
                    self.path.display(),
                    fresh.hashes.len()
                );
                *self.users.write().expect("not poisoned") = fresh;
                self.remembered.lock().expect("not poisoned").clear();
            }
            Err(e) => log::error!("{e}; keeping the users loaded before"),
        }
    }

    fn fingerprint(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `user` has `password`. Blocks for a bcrypt check unless a recent success is
    /// remembered: call it off the event loop (see [`Htpasswd::verify_remembered`]).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        self.refresh();
        let hash = {
            let users = self.users.read().expect("not poisoned");
            users.hashes.get(user).cloned()
        };
        let fingerprint = self.fingerprint(password);
        if let Some(hash) = &hash {
            if self.is_remembered(user, hash, &fingerprint) {
                return true;
            }
        }
        let ok = match &hash {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let (decoy, cost) = {
                    let users = self.users.read().expect("not poisoned");
                    (users.decoy.get().cloned(), users.decoy_cost)
                };
                let decoy = decoy.unwrap_or_else(|| {
                    let made = bcrypt::hash("decoy", cost).unwrap_or_default();
                    let _ = self
                        .users
                        .read()
                        .expect("not poisoned")
                        .decoy
                        .set(made.clone());
                    made
                });
                let _ = bcrypt::verify(password, &decoy);
                false
            }
        };
        if let (true, Some(hash)) = (ok, hash) {
            self.remembered.lock().expect("not poisoned").insert(
                user.to_string(),
                Remembered {
                    fingerprint,
                    hash,
                    until: Instant::now() + REMEMBER_FOR,
                },
            );
        }
        ok
    }

    /// `Some(true)` when a recent successful check of this very password is remembered, so no
    /// bcrypt is needed; `None` when [`Htpasswd::verify`] must decide.
    pub fn verify_remembered(&self, user: &str, password: &str) -> Option<bool> {
        self.refresh();
        let users = self.users.read().expect("not poisoned");
        let hash = users.hashes.get(user)?;
        self.is_remembered(user, hash, &self.fingerprint(password))
            .then_some(true)
    }

    fn is_remembered(&self, user: &str, hash: &str, fingerprint: &[u8; 32]) -> bool {
        let remembered = self.remembered.lock().expect("not poisoned");
        remembered.get(user).is_some_and(|r| {
            r.until > Instant::now()
                && r.hash == hash
                && openssl::memcmp::eq(&r.fingerprint, fingerprint)
        })
    }

    /// The check of `user`'s `password` shared by every request that asks meanwhile: the
    /// first to call [`SharedCheck::result`] runs it, the others wait for its answer.
    pub fn shared_check(&self, user: &str, password: &str) -> SharedCheck<'_> {
        let key = (user.to_string(), self.fingerprint(password));
        let cell = self
            .in_flight
            .lock()
            .expect("not poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        SharedCheck {
            users: self,
            key,
            cell,
        }
    }

    #[cfg(test)]
    pub(crate) fn checks_in_flight(&self) -> usize {
        self.in_flight.lock().expect("not poisoned").len()
    }

    pub fn user_count(&self) -> usize {
        self.users.read().expect("not poisoned").hashes.len()
    }
}

/// One check of one user's password, shared (see [`Htpasswd::shared_check`]).
pub struct SharedCheck<'a> {
    users: &'a Htpasswd,
    key: CheckKey,
    cell: Arc<tokio::sync::OnceCell<bool>>,
}

impl SharedCheck<'_> {
    /// The answer: `check`'s, run here unless another request's check gave it or gives it
    /// meanwhile. If `check` fails (it was refused before hashing), nothing is answered and a
    /// request still waiting runs its own.
    pub async fn result<E, F>(&self, check: F) -> Result<bool, E>
    where
        F: std::future::Future<Output = Result<bool, E>>,
    {
        self.cell.get_or_try_init(|| check).await.copied()
    }
}

impl Drop for SharedCheck<'_> {
    fn drop(&mut self) {
        // Forgotten once answered (or abandoned): later requests ask the remembered successes.
        let mut in_flight = self.users.in_flight.lock().expect("not poisoned");
        if in_flight
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            in_flight.remove(&self.key);
        }
    }
}

/// `berth htpasswd FILE USER`: the password is read from standard input (one line). Apache's
/// `htpasswd -Bbn USER PASSWORD` (print the entry, password on the command line) works too.
#[derive(Debug, clap::Args)]
pub struct HtpasswdArgs {
    /// FILE USER: the htpasswd file (created if missing, mode 0600) and the user to add, change
    /// or (with --delete) remove; with -n, USER only; with -b, then the PASSWORD.
    #[arg(value_name = "FILE USER [PASSWORD]", num_args = 1..=3, required = true)]
    pub args: Vec<String>,
    /// Remove the user instead.
    #[arg(long)]
    pub delete: bool,
    /// bcrypt cost (4–31): each step doubles the time of a check.
    #[arg(long, default_value_t = bcrypt::DEFAULT_COST)]
    pub cost: u32,
    /// bcrypt, as `htpasswd -B` (berth makes nothing else; accepted for the same command lines).
    #[arg(short = 'B')]
    pub bcrypt: bool,
    /// The password follows USER on the command line (visible to other users of the machine),
    /// as `htpasswd -b`.
    #[arg(short = 'b')]
    pub batch: bool,
    /// Print `USER:HASH` on standard output instead of editing a file, as `htpasswd -n`.
    #[arg(short = 'n')]
    pub print: bool,
}

/// Returns the new file text with `user` set to `hash` (or removed when `hash` is `None`),
/// keeping every other line as it was.
fn edit_entries(text: &str, user: &str, hash: Option<&str>) -> (String, bool) {
    let mut out = String::new();
    let mut found = false;
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            found = true;
            if let Some(hash) = hash {
                out.push_str(&format!("{user}:{hash}\n"));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        if let Some(hash) = hash {
            out.push_str(&format!("{user}:{hash}\n"));
        }
    }
    (out, found)
}

pub fn run(args: HtpasswdArgs) -> ExitCode {
    match edit_file(&args) {
        Ok(message) if args.print => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth htpasswd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Edits the file, or with `-n` answers the entry to print.
fn edit_file(args: &HtpasswdArgs) -> Result<String, String> {
    let usage = "give FILE USER, USER with -n, and the PASSWORD after them with -b";
    let (file, rest) = match (args.print, args.args.as_slice()) {
        (true, rest) => (None, rest),
        (false, [file, rest @ ..]) => (Some(Path::new(file)), rest),
        (false, []) => return Err(usage.into()),
    };
    let (user, password) = match (args.batch, rest) {
        (false, [user]) => (user.as_str(), None),
        (true, [user, password]) => (user.as_str(), Some(password.as_str())),
        _ => return Err(usage.into()),
    };
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(format!("{user:?} cannot be a user name (no ':' or spaces)"));
    }
    let Some(file) = file else {
        if args.delete {
            return Err("--delete needs the FILE (not -n)".into());
        }
        return Ok(format!(
            "{user}:{}",
            hash_password(user, password, args.cost)?
        ));
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let hash = match args.delete {
        true => None,
        false => Some(hash_password(user, password, args.cost)?),
    };
    let (new_text, found) = edit_entries(&text, user, hash.as_deref());
    if args.delete && !found {
        return Err(format!("no user {user:?} in {}", file.display()));
    }
    write_private(file, &new_text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(match (args.delete, found) {
        (true, _) => format!("removed {user} from {}", file.display()),
        (false, true) => format!("changed the password of {user}"),
        (false, false) => format!("added {user} to {}", file.display()),
    })
}

/// The bcrypt hash of `given`, or of a line read from standard input.
fn hash_password(user: &str, given: Option<&str>, cost: u32) -> Result<String, String> {
    let mut line = String::new();
    let password = match given {
        Some(p) => p,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password for {user}: ");
                let _ = std::io::stderr().flush();
            }
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password: {e}"))?;
            line.trim_end_matches(['\r', '\n'])
        }
    };
    if password.is_empty() {
        return Err("empty password (give it on standard input, or after USER with -b)".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is {} bytes long; bcrypt ignores everything after byte \
             {MAX_PASSWORD_BYTES}, so berth refuses longer ones",
            password.len()
        ));
    }
    bcrypt::hash(password, cost).map_err(|e| format!("bcrypt: {e}"))
}

/// Replaces `path` atomically with `text`, readable by its owner only.
/// Replaces `path` with `text` through a temporary file and a rename. A new file is mode 0600; an
/// existing one keeps its mode, owner and group (nginx reads it as group www-data, mode 0640).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let tmp = path.with_extension("berth-tmp");
    // A leftover of an interrupted run would keep its old mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Ok(existing) = std::fs::metadata(path) {
            let (uid, gid) = (existing.uid(), existing.gid());
            let mine = file.metadata()?;
            if (mine.uid(), mine.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot keep its owner {uid} and group {gid} ({e}); run as that \
                             owner or as root"
                        ),
                    )
                })?;
            }
            file.set_permissions(existing.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn bcrypt_entries_verify_and_others_are_refused_at_load() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let (_d, path) = file_with(&format!("# users\nalice:{hash}\n\n"));
        let users = Htpasswd::open(&path).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "s3cret"));
        assert_eq!(users.user_count(), 1);

        for (entry, kind) in [
            ("bob:rqXexS6ZhobKA", "DES-crypt"),
            ("bob:$apr1$x8gD1/2q$5Uwn7a1rXYe/2ND5DQQzs1", "MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:password", "plain-text"),
        ] {
            let (_d, path) = file_with(&format!("alice:{hash}\n{entry}\n"));
            let err = Htpasswd::open(&path).err().unwrap().to_string();
            assert!(err.contains(kind) && err.contains("line 2"), "{err}");
            assert!(err.contains("berth htpasswd"), "says how to fix it: {err}");
        }
    }

    #[test]
    fn a_success_is_remembered_but_only_for_the_same_password_and_entry() {
        let (_d, path) = file_with(&format!("alice:{}\n", bcrypt::hash("one", 4).unwrap()));
        let users = Htpasswd::open(&path).unwrap();
        assert_eq!(users.verify_remembered("alice", "one"), None);
        assert!(users.verify("alice", "one"));
        assert_eq!(users.verify_remembered("alice", "one"), Some(true));
        assert_eq!(users.verify_remembered("alice", "two"), None);
        assert_eq!(users.verify_remembered("nobody", "one"), None);

        // A changed file is read again, and what was remembered is forgotten.
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("two", 4).unwrap()),
        )
        .unwrap();
        users.users.write().unwrap().checked_at = Instant::now() - STAT_EVERY;
        assert_eq!(users.verify_remembered("alice", "one"), None);
        assert!(!users.verify("alice", "one"));
        assert!(users.verify("alice", "two"));
    }

    #[test]
    fn passwords_longer_than_bcrypt_hashes_are_refused() {
        let exact = "p".repeat(MAX_PASSWORD_BYTES);
        let (_d, path) = file_with(&format!("alice:{}\n", bcrypt::hash(&exact, 4).unwrap()));
        let users = Htpasswd::open(&path).unwrap();
        assert!(users.verify("alice", &exact), "72 bytes are all hashed");
        // bcrypt alone would accept these: it never sees byte 73 on.
        assert!(bcrypt::verify(format!("{exact}x"), &bcrypt::hash(&exact, 4).unwrap()).unwrap());
        assert!(!users.verify("alice", &format!("{exact}x")));
        assert!(!users.verify("alice", &format!("{exact}anything at all")));
    }

    #[test]
    fn a_file_broken_later_keeps_the_users_loaded_before() {
        let (_d, path) = file_with(&format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap()));
        let users = Htpasswd::open(&path).unwrap();
        std::fs::write(&path, "alice:plain\n").unwrap();
        users.users.write().unwrap().checked_at = Instant::now() - STAT_EVERY;
        assert!(users.verify("alice", "pw"));
        assert!(!users.verify("alice", "plain"));
    }

    #[test]
    fn editing_keeps_other_lines() {
        let text = "# team\nalice:A\nbob:B\n";
        assert_eq!(
            edit_entries(text, "bob", Some("C")),
            ("# team\nalice:A\nbob:C\n".to_string(), true)
        );
        assert_eq!(
            edit_entries(text, "carol", Some("D")),
            ("# team\nalice:A\nbob:B\ncarol:D\n".to_string(), false)
        );
        assert_eq!(
            edit_entries(text, "alice", None),
            ("# team\nbob:B\n".to_string(), true)
        );
    }
}
