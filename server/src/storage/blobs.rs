//! Content-addressed blob files in the data dir (model weights, strategy state).
//!
//! A blob is written to a temporary file, fsynced, renamed to its SHA-256 name and the
//! directory fsynced, so after a crash a blob either exists whole under its name or not at
//! all. Blobs are written *before* the transaction that references them; a crash in between
//! leaves an unreferenced file, which [`BlobDir::sweep`] removes at the next start.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::domain::{BlobRef, hex_sha256};

use super::StorageError;

const TMP_PREFIX: &str = ".tmp-";

/// The blob folder.
#[derive(Debug)]
pub(crate) struct BlobDir {
    dir: PathBuf,
}

impl BlobDir {
    /// Opens (creating if needed) `dir`.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StorageError> {
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    fn path_of(&self, sha256: &str) -> Result<PathBuf, StorageError> {
        // The digest names a file: refuse anything that is not exactly 64 hex digits so a
        // corrupt row can never point outside the folder.
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::corrupt(format!("blob name {sha256:?}")));
        }
        Ok(self.dir.join(sha256))
    }

    /// Writes `bytes` durably and returns its reference (a no-op if it exists already).
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<BlobRef, StorageError> {
        let blob = BlobRef::of(bytes);
        let path = self.path_of(&blob.sha256)?;
        if path.exists() && self.get(&blob).is_ok() {
            return Ok(blob);
        }
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            blob.sha256,
            std::process::id()
        ));
        let ctx = |what: &str| format!("{what} blob {}", tmp.display());
        let mut file = File::create(&tmp).map_err(|e| StorageError::io(ctx("creating"), e))?;
        file.write_all(bytes)
            .map_err(|e| StorageError::io(ctx("writing"), e))?;
        file.sync_all()
            .map_err(|e| StorageError::io(ctx("syncing"), e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| StorageError::io(ctx("renaming"), e))?;
        sync_dir(&self.dir)?;
        Ok(blob)
    }

    /// Reads a blob and checks its size and digest.
    pub(crate) fn get(&self, blob: &BlobRef) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(&blob.sha256)?;
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StorageError::corrupt(format!("blob {} is missing", blob.sha256))
            } else {
                StorageError::io(format!("reading {}", path.display()), e)
            }
        })?;
        if bytes.len() as u64 != blob.size_bytes || hex_sha256(&bytes) != blob.sha256 {
            return Err(StorageError::corrupt(format!(
                "blob {} does not match its digest",
                blob.sha256
            )));
        }
        Ok(bytes)
    }

    /// Removes temporary files and blobs no row references; returns how many were removed.
    pub(crate) fn sweep(&self, referenced: &HashSet<String>) -> Result<usize, StorageError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io(format!("listing {}", self.dir.display()), e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing blobs", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) || (name.len() == 64 && !referenced.contains(&name)) {
                fs::remove_file(entry.path())
                    .map_err(|e| StorageError::io(format!("removing {name}"), e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_detect_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(tmp.path().join("blobs")).unwrap();
        let blob = blobs.put(b"weights").unwrap();
        assert_eq!(blobs.get(&blob).unwrap(), b"weights");
        assert_eq!(
            blobs.put(b"weights").unwrap(),
            blob,
            "content-addressed: same name"
        );
        fs::write(tmp.path().join("blobs").join(&blob.sha256), b"tampered").unwrap();
        assert!(matches!(
            blobs.get(&blob),
            Err(StorageError::Corrupt { .. })
        ));
        let outside = BlobRef {
            sha256: "../../etc/passwd".into(),
            size_bytes: 1,
        };
        assert!(matches!(
            blobs.get(&outside),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn sweep_removes_temporaries_and_orphans_only() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(tmp.path().to_path_buf()).unwrap();
        let kept = blobs.put(b"kept").unwrap();
        let orphan = blobs.put(b"orphan").unwrap();
        fs::write(tmp.path().join(".tmp-half-written"), b"x").unwrap();
        let referenced = HashSet::from([kept.sha256.clone()]);
        assert_eq!(blobs.sweep(&referenced).unwrap(), 2);
        assert!(blobs.get(&kept).is_ok());
        assert!(blobs.get(&orphan).is_err());
    }
}
