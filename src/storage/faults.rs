//! A fault-injecting wrapper around any object store, for failure tests: operations on paths
//! matching a rule fail with a backend error, a given number of times.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// The kinds of storage operation a rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
    List,
    Copy,
    Rename,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    path_contains: String,
    remaining: usize,
}

/// The switchboard of injected faults; clone it to keep control after handing it to storage.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<Rule>>>);

impl Faults {
    /// Makes the next `times` operations `op` on a path containing `path_contains` fail.
    pub fn fail(&self, op: Op, path_contains: &str, times: usize) {
        self.0.lock().unwrap().push(Rule {
            op,
            path_contains: path_contains.to_string(),
            remaining: times,
        });
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.0.lock().unwrap().clear();
    }

    fn check(&self, op: Op, path: &Path) -> Result<()> {
        let mut rules = self.0.lock().unwrap();
        let hit = rules
            .iter_mut()
            .find(|r| r.op == op && r.remaining > 0 && path.as_ref().contains(&r.path_contains));
        match hit {
            Some(rule) => {
                rule.remaining -= 1;
                Err(object_store::Error::Generic {
                    store: "faults",
                    source: format!("injected {op:?} fault on {path}").into(),
                })
            }
            None => Ok(()),
        }
    }
}

/// An object store that fails where [`Faults`] says and otherwise forwards to `inner`.
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Faults,
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
