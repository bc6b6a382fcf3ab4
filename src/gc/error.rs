//! How a collection fails.

use thiserror::Error;

use crate::storage::{GcLockHolder, LockLoss, StorageError};

#[derive(Debug, Error)]
pub enum GcError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another collection holds the lock (`None`: it has not written its record yet).
    #[error("another garbage collection is running on this storage: {}; try again once it has finished", holder_text(.0))]
    Busy(Option<GcLockHolder>),
    #[error(
        "this collection lost its lock ({0}), and stopped (what it had set aside is put back)"
    )]
    LockLost(LockLoss),
    /// Some put-backs or link restores failed (every one was attempted); what is left is
    /// journalled under `_berth/gc/<run>/` and put back by the next run.
    #[error("{} of the collection's put-backs failed ({}); the next run puts back what is left{}", .failures.len(), failure_text(.failures), cause_text(.cause))]
    Incomplete {
        failures: Vec<(String, StorageError)>,
        /// What stopped the sweep, if it did not finish.
        cause: Option<Box<GcError>>,
    },
}

fn holder_text(h: &Option<GcLockHolder>) -> String {
    match h {
        Some(h) => h.to_string(),
        None => "a collection that has not written its lock record yet".into(),
    }
}

fn failure_text(f: &[(String, StorageError)]) -> String {
    let mut shown: Vec<String> = f.iter().take(3).map(|(w, e)| format!("{w}: {e}")).collect();
    if f.len() > 3 {
        shown.push(format!("and {} more", f.len() - 3));
    }
    shown.join("; ")
}

fn cause_text(c: &Option<Box<GcError>>) -> String {
    c.as_ref()
        .map(|c| format!("; the sweep had stopped because: {c}"))
        .unwrap_or_default()
}

/// Failures collected while putting things back, so that one does not stop the others.
#[derive(Debug, Default)]
pub struct Failures(pub Vec<(String, StorageError)>);

impl Failures {
    /// Records the failure of `what`, if it failed; whether it succeeded.
    pub fn note<T>(&mut self, what: impl FnOnce() -> String, r: Result<T, StorageError>) -> bool {
        match r {
            Ok(_) => true,
            Err(e) => {
                let what = what();
                log::error!("garbage-collect: {what}: {e}");
                self.0.push((what, e));
                false
            }
        }
    }

    /// Like [`Failures::note`], keeping the value: `None` if it failed.
    pub fn note_value<T>(
        &mut self,
        what: impl FnOnce() -> String,
        r: Result<T, StorageError>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.note(what, Err::<(), _>(e));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The error to report when `cause` stopped the work and these were the put-backs' failures.
    pub fn into_error(self, cause: GcError) -> GcError {
        if self.0.is_empty() {
            return cause;
        }
        GcError::Incomplete {
            failures: self.0,
            cause: Some(Box::new(cause)),
        }
    }

    /// `Ok` if nothing failed and there was no `cause`; else the error to report.
    pub fn into_result(self, cause: Option<GcError>) -> Result<(), GcError> {
        match (self.0.is_empty(), cause) {
            (true, None) => Ok(()),
            (true, Some(c)) => Err(c),
            (false, cause) => Err(GcError::Incomplete {
                failures: self.0,
                cause: cause.map(Box::new),
            }),
        }
    }
}
