//! Secret key files in the data directory: created once, readable by the owner only.

use std::path::Path;

/// Writes `contents` to a new file at `path` with mode 0600 (on Unix), creating `path`'s
/// directory if needed. If the file already exists (another process created it first), it is
/// left as it is: the caller reads whichever key won.
pub(crate) fn create_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, contents)?;
            file.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
