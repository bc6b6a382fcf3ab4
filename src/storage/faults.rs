//! A fault-injecting wrapper around any object store, for failure tests: operations on paths
//! matching a rule fail with a backend error, a given number of times: either one that leaves
//! nothing to tell but the failure (the backend unreachable, a `503`), or a refusal (a `4xx`
//! answer, worded exactly as object_store words S3's). The same rules make the syncs of upload
//! files fail with `EIO`, as a failing disk would (see [`super::filesync`]).

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use super::filesync::{FileSync, SystemSync};

/// The kinds of storage operation a rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
    List,
    Copy,
    Rename,
    /// Aborting a multipart upload (object stores).
    AbortMultipart,
    /// Starting write-back of an upload file (local disk, fsync on). Sync rules match any path.
    StartWriteBack,
    /// Waiting for write-back of an upload file.
    WaitWriteBack,
    /// The fsync of a finished upload file.
    Fsync,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    path_contains: String,
    remaining: usize,
    /// `Some(status)`: answered as the backend refusing the request with this 4xx status.
    refusal: Option<(u16, &'static str)>,
}

/// The switchboard of injected faults; clone it to keep control after handing it to storage.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<Rule>>>);

impl Faults {
    /// Makes the next `times` operations `op` on a path containing `path_contains` fail.
    pub fn fail(&self, op: Op, path_contains: &str, times: usize) {
        self.push(op, path_contains, times, None);
    }

    /// Makes the next `times` operations `op` on a path containing `path_contains` be refused
    /// as S3 refuses a copy of more than 5 GiB: `400 Bad Request`, `InvalidRequest`.
    pub fn refuse(&self, op: Op, path_contains: &str, times: usize) {
        let body = "<Error><Code>InvalidRequest</Code><Message>The specified copy source is \
                    larger than the maximum allowable size for a copy source: 5368709120\
                    </Message></Error>";
        self.push(op, path_contains, times, Some((400, body)));
    }

    fn push(
        &self,
        op: Op,
        path_contains: &str,
        times: usize,
        refusal: Option<(u16, &'static str)>,
    ) {
        self.0.lock().unwrap().push(Rule {
            op,
            path_contains: path_contains.to_string(),
            remaining: times,
            refusal,
        });
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.0.lock().unwrap().clear();
    }

    /// A sync operation (no object path): fails with `EIO` while a rule for `op` remains.
    fn check_sync(&self, op: Op) -> std::io::Result<()> {
        let mut rules = self.0.lock().unwrap();
        match rules.iter_mut().find(|r| r.op == op && r.remaining > 0) {
            Some(rule) => {
                rule.remaining -= 1;
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            }
            None => Ok(()),
        }
    }

    fn check(&self, op: Op, path: &Path) -> Result<()> {
        let mut rules = self.0.lock().unwrap();
        let hit = rules
            .iter_mut()
            .find(|r| r.op == op && r.remaining > 0 && path.as_ref().contains(&r.path_contains));
        match hit {
            Some(rule) => {
                rule.remaining -= 1;
                let source = match rule.refusal {
                    // object_store's `RetryError` then `RequestError::Status` messages.
                    Some((status, body)) => format!(
                        "Error performing {op:?} {path} (injected) - {}{status} {}: {body}",
                        super::STATUS_ERROR_PREFIX,
                        http_reason(status)
                    ),
                    None => format!("injected {op:?} fault on {path}"),
                };
                Err(object_store::Error::Generic {
                    store: "faults",
                    source: source.into(),
                })
            }
            None => Ok(()),
        }
    }
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "",
    }
}

/// Once a rule has failed a sync, the kernel's own call is made, as on a disk that failed once:
/// it then succeeds, which is exactly why the first failure must not be ignored.
impl FileSync for Faults {
    fn start_writeback(&self, file: &std::fs::File, from: u64, len: u64) -> std::io::Result<()> {
        self.check_sync(Op::StartWriteBack)?;
        SystemSync::default().start_writeback(file, from, len)
    }

    fn wait_writeback(&self, file: &std::fs::File, from: u64, len: u64) -> std::io::Result<()> {
        self.check_sync(Op::WaitWriteBack)?;
        SystemSync::default().wait_writeback(file, from, len)
    }

    fn sync_all(&self, file: &std::fs::File) -> std::io::Result<()> {
        self.check_sync(Op::Fsync)?;
        SystemSync::default().sync_all(file)
    }
}

/// An object store that fails where [`Faults`] says and otherwise forwards to `inner` (and its
/// multipart calls to `multipart`, when it stands for one).
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub multipart: Option<Arc<dyn MultipartStore>>,
    pub faults: Faults,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("multipart", &self.multipart.is_some())
            .field("faults", &self.faults)
            .finish()
    }
}

impl FaultyStore {
    fn multipart(&self) -> Result<&Arc<dyn MultipartStore>> {
        self.multipart
            .as_ref()
            .ok_or_else(|| object_store::Error::NotImplemented {
                operation: "multipart".into(),
                implementer: "FaultyStore without a multipart store".into(),
            })
    }
}

#[async_trait]
impl MultipartStore for FaultyStore {
    async fn create_multipart(&self, path: &Path) -> Result<MultipartId> {
        self.multipart()?.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        self.multipart()?.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        self.multipart()?.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> Result<()> {
        self.faults.check(Op::AbortMultipart, path)?;
        self.multipart()?.abort_multipart(path, id).await
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.faults.check(Op::Put, location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.check(Op::Put, location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.check(Op::Get, location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations
            .map(move |p| p.and_then(|p| faults.check(Op::Delete, &p).map(|()| p)))
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self
            .faults
            .check(Op::List, prefix.unwrap_or(&Path::default()))
        {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.faults
            .check(Op::List, prefix.unwrap_or(&Path::default()))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.check(Op::Copy, from)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.faults.check(Op::Rename, from)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    fn injected(faults: &Faults, op: Op) -> StorageError {
        faults
            .check(op, &Path::from("a/b"))
            .expect_err("a rule matches")
            .into()
    }

    #[test]
    fn refusals_are_permanent_and_other_faults_transient() {
        let faults = Faults::default();
        faults.refuse(Op::Copy, "a/", 1);
        faults.fail(Op::Rename, "a/", 1);
        assert!(matches!(
            injected(&faults, Op::Copy),
            StorageError::Refused { status: 400, .. }
        ));
        assert!(matches!(
            injected(&faults, Op::Rename),
            StorageError::Backend(object_store::Error::Generic { .. })
        ));
        assert!(
            faults.check(Op::Copy, &Path::from("a/b")).is_ok(),
            "used up"
        );
    }

    #[test]
    fn only_client_errors_that_are_not_worth_retrying_are_refusals() {
        let answered = |status: &str| -> StorageError {
            object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "Error performing PUT http://s3/x in 3ms - {}{status}: <Error/>",
                    crate::storage::STATUS_ERROR_PREFIX
                )
                .into(),
            }
            .into()
        };
        assert!(matches!(
            answered("400 Bad Request"),
            StorageError::Refused { status: 400, .. }
        ));
        assert!(matches!(
            answered("413 Payload Too Large"),
            StorageError::Refused { status: 413, .. }
        ));
        for transient in [
            "429 Too Many Requests",
            "408 Request Timeout",
            "503 Service Unavailable",
            "500 Internal Server Error",
        ] {
            assert!(
                matches!(answered(transient), StorageError::Backend(_)),
                "{transient}"
            );
        }
    }
}
