//! The throwaway cluster: made with the installed PostgreSQL binaries when no server answers,
//! shared by the test processes of one OS user, and removed by a detached reaper once they are
//! all gone.
//!
//! # Who may do what
//!
//! The cluster belongs to its *owner*: the test user, or the `postgres` OS user when the tests
//! run as root (initdb refuses root). It listens on no TCP address at all, only on a Unix socket
//! in the owner's directory, which is mode 0700 (and the socket 0700), so no other local user
//! can reach it: its `trust` authentication lets in only the owner and root, who can already do
//! anything the cluster's superuser can. `pg_hba.conf` rejects every address besides.
//!
//! Root never acts, itself, on a path the owner can change: whatever happens inside the owner's
//! directory (initdb, pg_ctl, writing the settings, reading the log, removing the files) runs as
//! the owner, and the reaper, which outlives the tests, runs as the owner from its first
//! instruction. A test process keeps no pid and reads no file there: who uses the cluster and
//! whether a reaper watches it are file locks in a directory of the test user's, which the
//! kernel releases when a process ends, whatever way it ends. The one path there that root
//! follows is the socket, as a client: it talks to whatever the owner serves on it, which is
//! what a client of the owner's server does anyway.
//!
//! # Layout
//!
//! `<temp>/stockroom-test-pg-<uid>/`, the *home*, is the test user's (mode 0700; when the owner
//! is another user, 0710 with the owner's group, so that the owner can reach its directory and
//! the locks, and list or change nothing). It holds three empty lock files, which stay, and the
//! owner's directory:
//!
//! - `lock`: taken (exclusive) by a test process while it looks at, starts or joins the cluster,
//!   and by the reaper before it removes the cluster, so that no process joins a cluster being
//!   removed;
//! - `clients`: held (shared) by every test process that uses the cluster, until it exits; the
//!   reaper, which can take it exclusively only when none does, removes the cluster after a
//!   grace period without one;
//! - `reaper`: held (exclusive) by the reaper for its life; a test process that can take it
//!   starts a reaper and hands it the lock already taken, so that two never run at once;
//! - `cluster/`: the owner's (0700): `data/`, `server.log`, and the socket
//!   `.s.PGSQL.5432`, which the reaper empties when it removes the cluster.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Names the directory of the binaries instead of the search (an empty directory: none).
const BIN_DIR_VAR: &str = "STOCKROOM_TEST_PG_BIN_DIR";
/// What a directory must hold to make and run a cluster.
const BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Where Debian and Ubuntu install each major version, as `<version>/bin`.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// How long the cluster outlives its last test process: long enough for cargo to start the next
/// test binary (and for a developer to run the next command), short enough not to linger.
const GRACE_SECS: u32 = 15;
/// Sets the grace in seconds instead (the harness's own tests wait for the reaper).
const GRACE_VAR: &str = "STOCKROOM_TEST_PG_GRACE_SECS";
/// The port of the cluster's socket, `.s.PGSQL.5432`. Nothing listens on it over TCP, and the
/// socket is in a directory of the cluster's own, so no other server's port can clash with it.
pub(super) const PORT: u16 = 5432;
/// The reaper, run as `/bin/sh -c`.
const REAPER: &str = include_str!("reaper.sh");
/// The reaper's `$0`, which `ps` shows.
const REAPER_NAME: &str = "stockroom-pg-reaper";
/// The tools the reaper runs, wherever the tests found theirs.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// This process's shared lock on `clients`, held until the process exits.
static CLIENT: OnceLock<File> = OnceLock::new();

/// The directory of the PostgreSQL binaries: `STOCKROOM_TEST_PG_BIN_DIR` if set, else the first
/// directory of `PATH` that holds them all, else the newest `/usr/lib/postgresql/<version>/bin`.
pub(super) fn find_bin_dir() -> Option<PathBuf> {
    match std::env::var_os(BIN_DIR_VAR) {
        Some(dir) => Some(PathBuf::from(dir)).filter(|dir| has_binaries(dir)),
        None => candidates(std::env::var_os("PATH"), Path::new(VERSIONED_ROOT))
            .into_iter()
            .find(|dir| has_binaries(dir)),
    }
}

/// Where [`find_bin_dir`] looked, for the message that says it found nothing.
pub(super) fn searched_places() -> String {
    match std::env::var_os(BIN_DIR_VAR) {
        Some(dir) => format!("{} ({BIN_DIR_VAR})", Path::new(&dir).display()),
        None => format!("PATH or {VERSIONED_ROOT}/*/bin"),
    }
}

fn has_binaries(dir: &Path) -> bool {
    BINARIES.iter().all(|name| dir.join(name).is_file())
}

/// The directories of `path`, then the versioned ones under `versioned_root`, newest first.
fn candidates(path: Option<OsString>, versioned_root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path.iter().flat_map(std::env::split_paths).collect();
    dirs.extend(versioned_bin_dirs(versioned_root));
    dirs
}

/// `<root>/<version>/bin` for each version directory under `root`, newest first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`, anything else → `None`.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Finds the running cluster or starts one with the binaries in `bin`, registers this process
/// as its client, and returns the directory of its socket (the port is [`PORT`]).
pub(super) fn acquire(bin: &Path) -> Result<PathBuf, String> {
    let cluster = Cluster::new(bin)?;
    cluster.make_home()?;
    let lock = cluster.lock_file("lock")?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", cluster.home.join("lock").display()))?;
    cluster.make_dir()?;
    if !cluster.running() {
        cluster.remove_stale()?;
        // A cluster that failed to start leaves nothing behind (no reaper may watch it yet).
        cluster.start().inspect_err(|_| {
            let _ = cluster.remove_stale();
        })?;
    }
    cluster.register()?;
    cluster.keep_reaped()?;
    drop(lock);
    Ok(cluster.dir())
}

/// Who runs `initdb`, `pg_ctl` and the reaper, and owns the cluster: this process's user, or,
/// for root (whom initdb refuses), the `postgres` OS user.
pub(super) enum Owner {
    Me,
    Postgres { uid: u32, gid: u32 },
}

impl Owner {
    pub(super) fn detect() -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self::Me);
        }
        match (postgres_id("-u"), postgres_id("-g")) {
            (Some(uid), Some(gid)) => Ok(Self::Postgres { uid, gid }),
            _ => Err(
                "the tests run as root, which initdb refuses, and there is no `postgres` OS \
                      user to own the cluster (create one, or run the tests as another user)"
                    .into(),
            ),
        }
    }

    /// The owner's uid.
    fn uid(&self) -> u32 {
        match self {
            Self::Me => rustix::process::geteuid().as_raw(),
            Self::Postgres { uid, .. } => *uid,
        }
    }

    /// A command that runs `program` as the owner. For `postgres`, the child takes its ids before
    /// it runs anything (std drops root's supplementary groups with them), and sees only `PATH`:
    /// the server it starts inherits its environment, which the owner can read, and root's may
    /// hold secrets.
    pub(super) fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.stdin(Stdio::null());
        if let Self::Postgres { uid, gid } = self {
            let path = std::env::var_os("PATH").unwrap_or_else(|| SYSTEM_PATH.into());
            command.uid(*uid).gid(*gid).env_clear().env("PATH", path);
        }
        command
    }

    /// Gives the directory `path`, just made by this process, to the owner (without following a
    /// symbolic link), so that it can make the cluster and its socket there.
    pub(super) fn take(&self, path: &Path) -> Result<(), String> {
        match self {
            Self::Me => Ok(()),
            Self::Postgres { uid, gid } => std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))
                .map_err(|e| format!("chown {} to postgres: {e}", path.display())),
        }
    }

    /// Appends `text` to the owner's file `path`, as the owner.
    pub(super) fn append(&self, path: &Path, text: &str) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("write {}: {e}", path.display());
        if let Self::Me = self {
            return OpenOptions::new()
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .map_err(failed);
        }
        let mut append = self.command(Path::new("/bin/sh"));
        append
            .args(["-c", r#"cat >> "$1""#, "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = append.spawn().map_err(failed)?;
        let written = child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(text.as_bytes());
        let out = child.wait_with_output().map_err(failed)?;
        written.map_err(failed)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("write {}: {}", path.display(), stderr.trim()));
        }
        Ok(())
    }

    /// The last `lines` lines of the owner's file `path`, read as the owner (empty if there is
    /// none): what a log says when a start failed.
    pub(super) fn tail(&self, path: &Path, lines: usize) -> String {
        let text = match self {
            Self::Me => fs::read_to_string(path).unwrap_or_default(),
            Self::Postgres { .. } => self
                .command(Path::new("tail"))
                .args(["-n", &lines.to_string(), "--"])
                .arg(path)
                .stderr(Stdio::null())
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default(),
        };
        let last: Vec<&str> = text.lines().rev().take(lines).collect();
        last.join(" / ")
    }

    /// Removes `paths` (and what they hold), as the owner; paths that do not exist are fine.
    pub(super) fn remove(&self, paths: &[PathBuf]) -> Result<(), String> {
        let mut rm = self.command(Path::new("rm"));
        rm.args(["-rf", "--"]).args(paths).current_dir("/");
        run(&mut rm, "rm")
    }
}

/// The `postgres` OS user's uid (`-u`) or gid (`-g`), through `id`, which also sees users that
/// are not in /etc/passwd.
fn postgres_id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The grace period in seconds: `STOCKROOM_TEST_PG_GRACE_SECS` when it is a number, else
/// [`GRACE_SECS`].
fn grace_secs() -> u32 {
    std::env::var(GRACE_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(GRACE_SECS)
}

struct Cluster {
    /// The test user's directory: the locks, and the owner's directory.
    home: PathBuf,
    bin: PathBuf,
    owner: Owner,
}

impl Cluster {
    fn new(bin: &Path) -> Result<Self, String> {
        let uid = rustix::process::geteuid().as_raw();
        Ok(Self {
            home: std::env::temp_dir().join(format!("stockroom-test-pg-{uid}")),
            bin: bin.to_owned(),
            owner: Owner::detect()?,
        })
    }

    /// The owner's directory: the cluster, its log and its socket.
    fn dir(&self) -> PathBuf {
        self.home.join("cluster")
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    /// `pg_ctl`, as the owner, in the owner's directory.
    fn pg_ctl(&self) -> Command {
        let mut command = self.owner.command(&self.bin.join("pg_ctl"));
        command.current_dir(self.dir());
        command
    }

    /// Makes the home, or checks that the one there is this user's and that no one else can
    /// write to it: everything after relies on no one else changing what is in it. Made in the
    /// temporary directory, where (sticky) no one else can rename or replace it either.
    fn make_home(&self) -> Result<(), String> {
        let home = self.home.display();
        match fs::DirBuilder::new().mode(0o700).create(&self.home) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(format!("create {home}: {e}"))
            }
            _ => {}
        }
        let meta = fs::symlink_metadata(&self.home).map_err(|e| format!("{home}: {e}"))?;
        let me = rustix::process::geteuid().as_raw();
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{home} is not a directory of this user's that only it can write; remove it"
            ));
        }
        // The owner may pass through (to its directory, to the locks), nobody else.
        let (group, mode) = match self.owner {
            Owner::Me => (None, 0o700),
            Owner::Postgres { gid, .. } => (Some(gid), 0o710),
        };
        std::os::unix::fs::lchown(&self.home, None, group)
            .and_then(|()| fs::set_permissions(&self.home, fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("restrict {home}: {e}"))
    }

    /// Makes the owner's directory, or checks the one there: a directory of the owner's, which
    /// only the owner may enter (the socket's guard). Its contents are the owner's business.
    fn make_dir(&self) -> Result<(), String> {
        let dir = self.dir();
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => self.owner.take(&dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("create {}: {e}", dir.display())),
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !meta.is_dir() || meta.uid() != self.owner.uid() {
            return Err(format!(
                "{} is not the cluster owner's directory; remove it",
                dir.display()
            ));
        }
        if meta.mode() & 0o7777 != 0o700 {
            // Only this user can change the entry (the home is its own): this is the checked one.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("restrict {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// The lock file `name` of the home, made if missing (empty, the test user's, and readable
    /// by the owner too, who locks it), opened read-only: a lock needs no more, and the reaper
    /// is handed this descriptor.
    fn lock_file(&self, name: &str) -> Result<File, String> {
        let path = self.home.join(name);
        let failed = |e| format!("open {}: {e}", path.display());
        let (group, mode) = match self.owner {
            Owner::Me => (None, 0o600),
            Owner::Postgres { gid, .. } => (Some(gid), 0o640),
        };
        let made = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(mode)
            .open(&path)
            .map_err(failed)?;
        std::os::unix::fs::fchown(&made, None, group).map_err(failed)?;
        made.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(failed)?;
        File::open(&path).map_err(failed)
    }

    /// True when the cluster's server runs (`pg_ctl status`, as the owner).
    fn running(&self) -> bool {
        self.pg_ctl()
            .arg("status")
            .arg("-D")
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Removes what a cluster that no longer serves left behind (a machine restart, a killed
    /// reaper), stopping its server first in case it still runs without answering.
    fn remove_stale(&self) -> Result<(), String> {
        let _ = self
            .pg_ctl()
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        self.owner.remove(&[self.data(), self.log()])
    }

    /// Makes the cluster and starts it.
    fn start(&self) -> Result<(), String> {
        self.initdb()?;
        let conf = self.data().join("postgresql.conf");
        self.owner.append(&conf, &settings(&self.dir()))?;
        let mut start = self.pg_ctl();
        start
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o", &format!("-p {PORT}")]);
        run(&mut start, "pg_ctl start").map_err(|e| {
            let tail = self.owner.tail(&self.log(), 3);
            format!("{e}; server.log ends with: {tail}")
        })
    }

    fn initdb(&self) -> Result<(), String> {
        let mut initdb = self.owner.command(&self.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(self.data())
            .args(INITDB_ARGS)
            .current_dir(self.dir());
        run(&mut initdb, "initdb")
    }

    /// Holds a shared lock on `clients` until this process exits, so that the reaper keeps the
    /// cluster while it lives.
    fn register(&self) -> Result<(), String> {
        let clients = self.lock_file("clients")?;
        clients
            .lock_shared()
            .map_err(|e| format!("lock {}: {e}", self.home.join("clients").display()))?;
        // A second call (there is none: the server is settled once) would keep the first lock.
        let _ = CLIENT.set(clients);
        Ok(())
    }

    /// Starts the reaper unless one runs (holds the `reaper` lock).
    fn keep_reaped(&self) -> Result<(), String> {
        let reaper = self.lock_file("reaper")?;
        match reaper.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(format!("lock the reaper's file: {e}")),
        }
        // Without its comments, the script is the reaper's command line as `ps` shows it.
        let script: Vec<&str> = REAPER
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .collect();
        // The reaper outlives this process and its PATH: absolute paths, the binaries' real one.
        let pg_ctl = fs::canonicalize(self.bin.join("pg_ctl"))
            .map_err(|e| format!("find pg_ctl in {}: {e}", self.bin.display()))?;
        self.owner
            .command(Path::new("/bin/sh"))
            .arg("-c")
            .arg(script.join("\n"))
            .arg(REAPER_NAME)
            .arg(self.dir())
            .arg(self.home.join("lock"))
            .arg(self.home.join("clients"))
            .arg(grace_secs().to_string())
            .arg(pg_ctl)
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .current_dir("/")
            // The lock, taken above, as the reaper's stdin: the reaper holds it from its first
            // instant to its last, with no moment in between for a second one to start.
            .stdin(Stdio::from(reaper))
            // Detached: no other stdio (a `cargo test | tee` would wait for it), and a process
            // group of its own (Ctrl-C on the tests must not stop the clean-up).
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop) // never waited for: it outlives this process
            .map_err(|e| format!("start the reaper (sh): {e}"))
    }
}

/// initdb's options for a test cluster. Only the owner reaches the socket (see the module docs),
/// so `trust` on it; every TCP address is rejected, should one ever be listened on. C.UTF-8, as
/// Debian's clusters: pg_trgm sees non-ASCII letters as letters only in a UTF-8 ctype. No fsync:
/// the cluster dies with the tests.
pub(super) const INITDB_ARGS: [&str; 6] = [
    "--auth-local=trust",
    "--auth-host=reject",
    "--username=postgres",
    "--encoding=UTF8",
    "--locale=C.UTF-8",
    "--no-sync",
];

/// The settings of a test cluster whose socket lives in `socket_dir`.
pub(super) fn settings(socket_dir: &Path) -> String {
    // Quoted as postgresql.conf reads strings: a quote doubled, a backslash escaped.
    let socket_dir = socket_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('\'', "''");
    format!(
        "\n# stockroom test harness: a socket only its owner reaches, many parallel tests, no \
         durability\n\
         listen_addresses = ''\n\
         unix_socket_directories = '{socket_dir}'\n\
         unix_socket_permissions = 0700\n\
         max_connections = 300\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n"
    )
}

/// Runs `command` to its end; its stderr is the error if it fails.
pub(super) fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what} did not run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{what} failed ({}): {}", out.status, stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("stockroom-harness-{}", uuid::Uuid::now_v7()));
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }

        /// Makes `relative` a directory holding files named `binaries`.
        fn bin_dir(&self, relative: &str, binaries: &[&str]) -> PathBuf {
            let dir = self.0.join(relative);
            fs::create_dir_all(&dir).unwrap();
            for name in binaries {
                fs::write(dir.join(name), "").unwrap();
            }
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn versions_parse_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("15-beta"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn versioned_directories_come_newest_first() {
        let scratch = Scratch::new();
        for version in ["9.6", "15", "10", "README"] {
            scratch.bin_dir(&format!("{version}/bin"), &BINARIES);
        }
        let found = versioned_bin_dirs(&scratch.0);
        let expected: Vec<PathBuf> = ["15", "10", "9.6"]
            .iter()
            .map(|v| scratch.0.join(v).join("bin"))
            .collect();
        assert_eq!(found, expected);
        assert!(versioned_bin_dirs(&scratch.0.join("absent")).is_empty());
    }

    #[test]
    fn path_comes_first_and_a_directory_needs_every_binary() {
        let scratch = Scratch::new();
        let clients_only = scratch.bin_dir("usr/bin", &["psql", "pg_ctl"]);
        let local = scratch.bin_dir("local/bin", &BINARIES);
        let versioned = scratch.0.join("lib");
        scratch.bin_dir("lib/16/bin", &BINARIES);
        let path = std::env::join_paths([&clients_only, &local]).unwrap();

        let dirs = candidates(Some(path), &versioned);
        assert_eq!(
            dirs,
            [
                clients_only.clone(),
                local.clone(),
                versioned.join("16/bin")
            ]
        );
        assert!(!has_binaries(&clients_only));
        assert_eq!(dirs.into_iter().find(|d| has_binaries(d)), Some(local));

        let without_path = candidates(None, &versioned);
        assert_eq!(without_path, [versioned.join("16/bin")]);
    }

    #[test]
    fn settings_listen_on_the_socket_only_and_quote_its_directory() {
        let settings = settings(Path::new("/tmp/it's here"));
        assert!(settings.contains("unix_socket_directories = '/tmp/it''s here'\n"));
        assert!(settings.contains("unix_socket_permissions = 0700\n"));
        assert!(settings.contains("listen_addresses = ''\n"));
        assert!(settings.contains("max_connections = 300\n"));
        assert!(settings.contains("fsync = off\n"));
        assert!(INITDB_ARGS.contains(&"--auth-host=reject"));
    }
}
