//! The throwaway cluster: made with the installed PostgreSQL binaries when no server answers,
//! shared by the test processes of one OS user, and removed by a detached reaper once they are
//! all gone.
//!
//! It listens on no TCP address at all, only on a Unix socket in its directory, which belongs to
//! the cluster's owner (the test user, or `postgres` when the tests run as root) and is mode 0700
//! (the socket too), so no other local user can reach it: its `trust` authentication lets in
//! only the owner and root, who can already do anything the cluster's superuser can.
//! `pg_hba.conf` rejects every address besides.
//!
//! Its directory, `<temp>/stockroom-pg-<uid>`, holds `data/` (the cluster), the socket
//! `.s.PGSQL.5432`, `server.log`, `clients/<pid>` (one empty file per test process that uses it)
//! and `heartbeat` (touched by the reaper every second). A process takes the lock file
//! `<temp>/stockroom-pg-<uid>.lock` (outside the directory, which the reaper removes) before it
//! looks at the directory, so only one process starts the cluster, the others join it, and the
//! reaper, which takes the same lock, cannot remove it while a process joins.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Names the directory of the binaries instead of the search (an empty directory: none).
const BIN_DIR_VAR: &str = "STOCKROOM_TEST_PG_BIN_DIR";
/// What a directory must hold to make and run a cluster.
const BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Where Debian and Ubuntu install each major version, as `<version>/bin`.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// How long the cluster outlives its last test process: long enough for cargo to start the next
/// test binary (and for a developer to run the next command), short enough not to linger.
const GRACE_SECS: u32 = 15;
/// The port of the cluster's socket, `.s.PGSQL.5432`. Nothing listens on it over TCP, and the
/// socket is in a directory of the cluster's own, so no other server's port can clash with it.
pub(super) const PORT: u16 = 5432;
/// The reaper, run as `/bin/sh -c`.
const REAPER: &str = include_str!("reaper.sh");
/// How long the reaper's heartbeat may be still before the reaper is taken for gone (it beats
/// every second). A heartbeat, not a pid: a killed reaper may linger as a zombie, and pids are
/// reused.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

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
    let _lock = cluster.lock()?;
    if !cluster.running() {
        cluster.remove_stale()?;
        // A cluster that failed to start leaves nothing behind (no reaper watches it yet).
        cluster.start().inspect_err(|_| {
            let _ = cluster.remove_stale();
        })?;
    }
    cluster.register()?;
    cluster.keep_reaped()?;
    Ok(cluster.dir.clone())
}

/// Who runs `initdb` and `pg_ctl`: this process's user, or, for root (whom initdb refuses), the
/// `postgres` OS user through `runuser`.
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

    /// The command line that runs `program` as the owner.
    fn argv(&self, program: &Path) -> Vec<OsString> {
        match self {
            Self::Me => vec![program.into()],
            Self::Postgres { .. } => ["runuser", "-u", "postgres", "--"]
                .into_iter()
                .map(OsString::from)
                .chain([program.into()])
                .collect(),
        }
    }

    pub(super) fn command(&self, program: &Path) -> Command {
        let argv = self.argv(program);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).stdin(Stdio::null());
        command
    }

    /// Gives `path` to the owner, so that it can make the cluster and its socket there.
    pub(super) fn take(&self, path: &Path) -> Result<(), String> {
        match self {
            Self::Me => Ok(()),
            Self::Postgres { uid, gid } => std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| format!("chown {} to postgres: {e}", path.display())),
        }
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

struct Cluster {
    dir: PathBuf,
    lock: PathBuf,
    bin: PathBuf,
    owner: Owner,
}

impl Cluster {
    fn new(bin: &Path) -> Result<Self, String> {
        let uid = rustix::process::geteuid().as_raw();
        let temp = std::env::temp_dir();
        Ok(Self {
            dir: temp.join(format!("stockroom-pg-{uid}")),
            lock: temp.join(format!("stockroom-pg-{uid}.lock")),
            bin: bin.to_owned(),
            owner: Owner::detect()?,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn clients(&self) -> PathBuf {
        self.dir.join("clients")
    }

    fn heartbeat(&self) -> PathBuf {
        self.dir.join("heartbeat")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.owner.command(&self.bin.join("pg_ctl"));
        command.current_dir(&self.dir);
        command
    }

    /// Takes the lock (waiting while another process starts the cluster); released when the
    /// file is dropped.
    fn lock(&self) -> Result<File, String> {
        let what = |e| format!("lock {}: {e}", self.lock.display());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.lock)
            .map_err(what)?;
        file.lock().map_err(what)?;
        Ok(file)
    }

    /// True when the cluster's server runs.
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
    /// reaper), stopping its server first in case only its port file was lost.
    fn remove_stale(&self) -> Result<(), String> {
        if !self.dir.exists() {
            return Ok(());
        }
        let _ = self
            .pg_ctl()
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        fs::remove_dir_all(&self.dir)
            .map_err(|e| format!("remove the stale {}: {e}", self.dir.display()))
    }

    /// Makes the cluster and starts it.
    fn start(&self) -> Result<(), String> {
        let made = |e| format!("create {}: {e}", self.dir.display());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(made)?;
        self.owner.take(&self.dir)?;
        fs::create_dir(self.clients()).map_err(made)?;
        self.initdb()?;
        self.configure()?;
        self.start_server()
    }

    fn initdb(&self) -> Result<(), String> {
        let mut initdb = self.owner.command(&self.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(self.data())
            .args(INITDB_ARGS)
            .current_dir(&self.dir);
        run(&mut initdb, "initdb")
    }

    /// Appends the test settings to the cluster's postgresql.conf.
    fn configure(&self) -> Result<(), String> {
        use std::io::Write;
        let conf = self.data().join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings(&self.dir).as_bytes()))
            .map_err(|e| format!("write {}: {e}", conf.display()))
    }

    fn start_server(&self) -> Result<(), String> {
        let mut start = self.pg_ctl();
        start
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o", &format!("-p {PORT}")]);
        run(&mut start, "pg_ctl start").map_err(|e| {
            let log = fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!("{e}; server.log ends with: {}", tail.join(" / "))
        })
    }

    /// Records this process as a client, so that the reaper keeps the cluster while it lives.
    fn register(&self) -> Result<(), String> {
        let file = self.clients().join(std::process::id().to_string());
        File::create(&file)
            .map(drop)
            .map_err(|e| format!("register in {}: {e}", file.display()))
    }

    /// True when the reaper's heartbeat is recent.
    fn reaped(&self) -> bool {
        fs::metadata(self.heartbeat())
            .and_then(|meta| meta.modified())
            // A time in the future (another clock) is recent too.
            .is_ok_and(|beat| beat.elapsed().map_or(true, |age| age < HEARTBEAT_TIMEOUT))
    }

    /// Starts the reaper unless it runs.
    fn keep_reaped(&self) -> Result<(), String> {
        if self.reaped() {
            return Ok(());
        }
        // Without its comments, the script is the reaper's command line as `ps` shows it.
        let script: Vec<&str> = REAPER
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .collect();
        // The reaper outlives this process and its PATH: absolute paths, the binaries' real one.
        let pg_ctl = fs::canonicalize(self.bin.join("pg_ctl"))
            .map_err(|e| format!("find pg_ctl in {}: {e}", self.bin.display()))?;
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script.join("\n"))
            .arg("stockroom-pg-reaper")
            .arg(&self.dir)
            .arg(&self.lock)
            .arg(GRACE_SECS.to_string())
            .args(self.owner.argv(&pg_ctl))
            .current_dir("/")
            // Detached: no stdio (a `cargo test | tee` would wait for it), and a process group of
            // its own (Ctrl-C on the tests must not stop the clean-up).
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop) // never waited for: it outlives this process
            .map_err(|e| format!("start the reaper (sh): {e}"))?;
        // The first beat, so that a process joining in the reaper's first second sees it.
        File::create(self.heartbeat())
            .map(drop)
            .map_err(|e| format!("write {}: {e}", self.heartbeat().display()))
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
