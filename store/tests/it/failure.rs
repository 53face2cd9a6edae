//! Store failures: a bad path fails to open cleanly.
//!
//! Not tested here (see store/README.md): a write or fsync failing at run
//! time (needs a faulty block device, dm-flakey or a tiny filesystem we may
//! not mount; `ulimit -f` does not work because fjall preallocates 64 MiB
//! journals and rotates them), and a read-only directory (the tests run as
//! root, which bypasses permission bits).

use ringcast_store::{ErrorSource, Store, StoreError};

use crate::util::config;

#[test]
fn open_under_a_regular_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = Store::open(config(&file.join("store"))).unwrap_err();
    assert!(matches!(error, StoreError::Io { .. }), "{error:?}");
    assert_eq!(error.source_tag(), ErrorSource::Disk);
    assert!(
        error.to_string().contains("opening the database"),
        "{error}"
    );
}
