//! Only one crate may link SQLite: sqlx's optional SQLite driver (in the lock file through the
//! PostgreSQL adapter) needs `libsqlite3-sys` below 0.38, so this workspace's lock keeps rusqlite
//! at 0.39 (the workspace's range admits newer ones for applications; the fixture
//! `fixtures/latest-rusqlite`, run by `.ci/run`, checks the newest). This check fails if the
//! workspace, with every adapter and feature in the build, ever resolves two.

use std::path::Path;
use std::process::Command;

#[test]
fn one_libsqlite3_sys_with_every_adapter_in_the_build() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "tree",
            "--offline",
            "--workspace",
            "--all-features",
            "--invert",
            "libsqlite3-sys",
            "--depth",
            "0",
            "--prefix",
            "none",
        ])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Two versions make the package name ambiguous, and cargo tree fails saying so.
    assert!(output.status.success(), "cargo tree failed:\n{stderr}");
    let versions: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("libsqlite3-sys v"))
        .collect();
    assert_eq!(versions.len(), 1, "{stdout}");
}
