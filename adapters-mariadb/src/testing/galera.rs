//! A throwaway three-node MariaDB Galera cluster on this machine, for tests of Stockroom on a
//! multi-primary cluster: every node takes writes, and a transaction that conflicts with one
//! committed on another node fails its `COMMIT` with error 1213.
//!
//! ```no_run
//! use stockroom_core::Store;
//! use stockroom_mariadb::testing::galera;
//!
//! #[tokio::test]
//! async fn writes_on_two_nodes() {
//!     // `None`: no Galera on this machine (a line on stderr said so); the test is skipped.
//!     let Some(cluster) = galera::shared().await else { return };
//!     let db = cluster.database().await;
//!     let (a, b) = (db.store(0).await, db.store(1).await);
//!     db.drop_after(async move {
//!         // … the test, with a store on node 0 and one on node 1 …
//!         a.close().await;
//!         b.close().await;
//!     })
//!     .await;
//! }
//! # fn main() {}
//! ```
//!
//! # What runs
//!
//! [`GaleraCluster::start`] makes the cluster from the installed server, `mariadbd` (with its
//! `mariadb-install-db` and `wsrep_sst_rsync`), and the galera-4 provider
//! (`/usr/lib/galera/libgalera_smm.so`, or the first of the usual other places; the variables
//! `STOCKROOM_TEST_MARIADBD` and `STOCKROOM_TEST_GALERA_PROVIDER` name others):
//!
//! 1. a directory `stockroom-galera-<pid>-<random>` under the temporary directory, mode 0700,
//!    which belongs to the cluster's *owner*: the test user, or the `mysql` OS user when the
//!    tests run as root (mariadbd refuses to run as root). Everything inside it is done as the
//!    owner (making the data directories, running the servers, reading their logs, removing
//!    it); root itself follows no path there. Each node has its own `nN/` (data, temporary
//!    files, socket, error log);
//! 2. a detached reaper, started first, as the owner (`galera_reaper.sh`): it waits for the end
//!    of a pipe that only the test process holds, then kills every process of the owner whose
//!    command line names a path inside the directory, and removes the directory. A cluster
//!    therefore goes away with the test process, whatever way that ends (a static cluster,
//!    never dropped, included);
//! 3. `mariadb-install-db` for node 0, with a `root@127.0.0.1` account whose password is
//!    random (the only TCP account: `root@localhost` is reached by the owner's socket only),
//!    so that no other local user can use the servers' TCP ports; nodes 1 and 2 start with
//!    empty data directories and receive node 0's by state transfer;
//! 4. four loopback ports per node, chosen free below the ephemeral range (so neither an
//!    outgoing connection nor another test run nor the machine's MariaDB on 3306 takes them):
//!    the SQL port, the group communication port (Galera's 4567), the incremental state
//!    transfer port (4568) and the state snapshot transfer port (4444);
//! 5. node 0 bootstraps the cluster (`--wsrep-new-cluster`); node 1, then node 2, join it, each
//!    by an rsync state snapshot transfer (`wsrep_sst_method=rsync`) from a synced node, one
//!    after the other (two joiners at once slow the membership protocol down by seconds);
//!    `start` returns when every node is `Synced`, `wsrep_ready=ON`, and sees a primary
//!    component of three.
//!
//! The servers trade durability for speed, as the test clusters of the other backends do:
//! `innodb_flush_log_at_trx_commit=2` (a killed *process* loses nothing, a machine crash
//! would), no doublewrite. Galera's failure detection is shortened (a node killed with SIGKILL
//! is declared gone after about 2 s instead of 5 s: commits on the other nodes wait for that
//! decision), within what a loaded machine still keeps stable.
//!
//! # Sharing, skipping
//!
//! [`shared`] starts one cluster per test process, on first use, for the tests that need it;
//! each test makes its own database ([`GaleraCluster::database`]). A test that kills or
//! restarts nodes changes the cluster under every other test, so the tests of one process must
//! not run such a test beside others (hold a lock of the test file's own around each).
//!
//! Without the binaries (or when the cluster cannot start), [`shared`] prints one line to
//! stderr and returns `None`, and the tests skip; with `CI` or
//! `STOCKROOM_TEST_REQUIRE_GALERA=1` set, it panics with the reason instead, so CI never passes
//! by skipping.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, MySqlConnection};
use stockroom_core::StoreConfig;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::MariaDbStore;

/// How many nodes a cluster has.
pub const NODES: usize = 3;

/// Names the server binary instead of the search.
const MARIADBD_VAR: &str = "STOCKROOM_TEST_MARIADBD";
/// Names the Galera provider library instead of the search.
const PROVIDER_VAR: &str = "STOCKROOM_TEST_GALERA_PROVIDER";
/// Makes a missing Galera a failure rather than a skip (as `CI` does).
const REQUIRE_VAR: &str = "STOCKROOM_TEST_REQUIRE_GALERA";
/// Where distributions install the server.
const MARIADBD_PLACES: [&str; 3] = [
    "/usr/sbin/mariadbd",
    "/usr/libexec/mariadbd",
    "/usr/local/mysql/bin/mariadbd",
];
/// Where distributions install galera-4's provider (Debian's first).
const PROVIDER_PLACES: [&str; 4] = [
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
];
/// The tools the cluster's processes run, wherever the tests found theirs: the state transfer
/// script (`wsrep_sst_rsync`) and what it calls (`rsync`, `ss`).
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The reaper, run as `/bin/sh -c`.
const REAPER: &str = include_str!("galera_reaper.sh");
/// How many of a server's last stderr lines are kept for an error message.
const STDERR_LINES: usize = 6;
/// The reaper's `$0`, which `ps` shows.
const REAPER_NAME: &str = "stockroom-galera-reaper";
/// The longest wait for one node to start, join and be synced (a state transfer included).
const NODE_START_TIMEOUT: Duration = Duration::from_secs(90);
/// The ports are picked in `[PORT_LOW, PORT_HIGH)`: above the well-known and registered
/// servers' usual ports, below Linux's ephemeral range (32768-60999), from which outgoing
/// connections take their local ports.
const PORT_LOW: u16 = 10_000;
const PORT_HIGH: u16 = 32_768;
/// Galera's provider options besides the addresses: a small write-set cache (enough for the
/// incremental transfers of a test run), and a failure detection shortened from 5 s (suspect) /
/// 15 s (inactive) to 2 s / 4 s, so that a killed node stalls the others' commits for about
/// 2 s rather than 5 s.
const PROVIDER_OPTIONS: &str = "gcache.size=128M;evs.keepalive_period=PT0.5S;\
     evs.inactive_check_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;\
     evs.install_timeout=PT4S";

/// The cluster of this process, started by the first call to [`shared`].
static SHARED: OnceCell<Result<GaleraCluster, String>> = OnceCell::const_new();

/// The one skip notice of this process.
static SKIP_NOTICE: Once = Once::new();

/// The cluster for this process's Galera tests, started on the first call, or `None` when
/// there is none and the tests are to be skipped (after a line on stderr saying so, once per
/// process). See the [module docs](self).
///
/// # Panics
///
/// When there is no cluster and Galera is required ([`galera_required`]).
pub async fn shared() -> Option<&'static GaleraCluster> {
    let start = || async {
        let started = Instant::now();
        let cluster = GaleraCluster::start().await?;
        // One line per process, for the time a CI run spends where.
        let _ = writeln!(
            std::io::stderr().lock(),
            "Galera cluster of {NODES} nodes formed in {:.1?} ({})",
            started.elapsed(),
            cluster.dir.display()
        );
        Ok(cluster)
    };
    match SHARED.get_or_init(start).await {
        Ok(cluster) => Some(cluster),
        Err(reason) if galera_required() => panic!(
            "a Galera cluster is required (CI or {REQUIRE_VAR} is set) and none could start: \
             {}",
            one_line(reason)
        ),
        Err(reason) => {
            SKIP_NOTICE.call_once(|| {
                // Straight to the process's stderr: the test harness captures `eprintln!` of a
                // test that passes, and a skipped test passes.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "Galera tests skipped: {}. To run them, install MariaDB with galera-4 and \
                     rsync (or set {MARIADBD_VAR} and {PROVIDER_VAR}); with CI or \
                     {REQUIRE_VAR}=1 set they fail instead.",
                    one_line(reason)
                );
            });
            None
        }
    }
}

/// True when a missing cluster must fail the tests rather than skip them: `CI` or
/// `STOCKROOM_TEST_REQUIRE_GALERA` is set to anything but an empty string, `false` or `0`.
pub fn galera_required() -> bool {
    let on = |name| match std::env::var(name).ok().as_deref().map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    };
    on("CI") || on(REQUIRE_VAR)
}

/// `text` on one line: its lines joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The programs a cluster needs.
#[derive(Clone)]
struct Binaries {
    mariadbd: PathBuf,
    install_db: PathBuf,
    provider: PathBuf,
}

impl Binaries {
    /// Finds the server, `mariadb-install-db` beside it (in `bin/` for `sbin/`), the provider,
    /// and checks that the state transfer can run (`wsrep_sst_rsync` and `rsync` in the system
    /// path).
    fn find() -> Result<Self, String> {
        let mariadbd = from_var_or_places(MARIADBD_VAR, &MARIADBD_PLACES)
            .ok_or_else(|| missing(MARIADBD_VAR, &MARIADBD_PLACES, "mariadbd"))?;
        let provider = from_var_or_places(PROVIDER_VAR, &PROVIDER_PLACES)
            .ok_or_else(|| missing(PROVIDER_VAR, &PROVIDER_PLACES, "the galera-4 provider"))?;
        let install_db = in_system_path("mariadb-install-db", &mariadbd)
            .ok_or("no mariadb-install-db beside mariadbd or in the system path")?;
        for tool in ["wsrep_sst_rsync", "rsync"] {
            in_system_path(tool, &mariadbd).ok_or_else(|| {
                format!("no {tool} in {SYSTEM_PATH} (the rsync state transfer needs it)")
            })?;
        }
        Ok(Self {
            mariadbd,
            install_db,
            provider,
        })
    }
}

/// The file the variable `var` names (only that one, when set), else the first of `places`.
fn from_var_or_places(var: &str, places: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => places.iter().map(PathBuf::from).find(|p| p.is_file()),
    }
}

fn missing(var: &str, places: &[&str], what: &str) -> String {
    match std::env::var_os(var) {
        Some(path) => format!("no {what} at {} ({var})", Path::new(&path).display()),
        None => format!("no {what} at {}", places.join(", ")),
    }
}

/// `name` beside `beside` (or in the `bin/` next to its `sbin/`), else in [`SYSTEM_PATH`].
fn in_system_path(name: &str, beside: &Path) -> Option<PathBuf> {
    let dir = beside.parent()?;
    let mut dirs = vec![dir.to_path_buf()];
    if dir.ends_with("sbin") {
        dirs.push(dir.with_file_name("bin"));
    }
    dirs.extend(std::env::split_paths(SYSTEM_PATH));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Who runs the cluster and owns its directory: this process's user, or, for root (whom
/// mariadbd refuses), the `mysql` OS user.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Me,
    Mysql { uid: u32, gid: u32 },
}

impl Owner {
    fn detect() -> Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self::Me);
        }
        match (mysql_id("-u"), mysql_id("-g")) {
            (Some(uid), Some(gid)) => Ok(Self::Mysql { uid, gid }),
            _ => Err(
                "the tests run as root, which mariadbd refuses, and there is no `mysql` OS \
                      user to own the cluster (create one, or run the tests as another user)"
                    .into(),
            ),
        }
    }

    fn uid(self) -> u32 {
        match self {
            Self::Me => rustix::process::geteuid().as_raw(),
            Self::Mysql { uid, .. } => uid,
        }
    }

    /// A command that runs `program` as the owner, in `/`, with nothing but the system path in
    /// its environment (the servers inherit it, and the owner can read theirs; root's may hold
    /// secrets), no stdin, and its output discarded. For `mysql`, the child takes its ids before
    /// it runs anything (std drops root's supplementary groups with them).
    fn command(self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Self::Mysql { uid, gid } = self {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Runs `program args…` as the owner to its end; its stderr is the error if it fails.
    fn run(self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let mut command = self.command(Path::new(program));
        command.args(args).stderr(Stdio::piped());
        run(&mut command, program)
    }

    /// Writes `text` to the new file `path` (mode 0600), as the owner.
    fn write_new(self, path: &Path, text: &str) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("write {}: {e}", path.display());
        let mut write = self.command(Path::new("/bin/sh"));
        write
            .args(["-c", r#"umask 077 && set -C && cat > "$1""#, "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = write.spawn().map_err(failed)?;
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

    /// The last `lines` lines of the owner's file `path`, read as the owner, joined with " / "
    /// (empty if there is none): what a log says when a start failed.
    fn tail(self, path: &Path, lines: usize) -> String {
        let out = self
            .command(Path::new("tail"))
            .args(["-n", &lines.to_string(), "--"])
            .arg(path)
            .stdout(Stdio::piped())
            .output();
        let text = out
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        text.lines().collect::<Vec<_>>().join(" / ")
    }
}

/// The `mysql` OS user's uid (`-u`) or gid (`-g`), through `id`, which also sees users that are
/// not in /etc/passwd.
fn mysql_id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "mysql"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Runs `command` to its end; its stderr is the error if it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what} did not run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{what} failed ({}): {}", out.status, stderr.trim()))
}

/// The loopback ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ports {
    /// Clients (`--port`).
    sql: u16,
    /// Group communication (Galera's 4567).
    gcomm: u16,
    /// Incremental state transfer (4568).
    ist: u16,
    /// State snapshot transfer: the joiner's rsync daemon (4444).
    sst: u16,
}

/// `count` distinct free loopback ports in `[PORT_LOW, PORT_HIGH)`, each seen free by binding
/// it (all held until every one is found, so none is picked twice). Another process may still
/// take one before the server binds it: a start that fails so is tried again with new ports.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let mut held = Vec::with_capacity(count);
    let span = u32::from(PORT_HIGH - PORT_LOW);
    let mut tries = 0;
    while held.len() < count {
        tries += 1;
        if tries > 10_000 {
            return Err(format!(
                "found only {} free loopback ports in {PORT_LOW}..{PORT_HIGH}",
                held.len()
            ));
        }
        let port = PORT_LOW + (random_u32()? % span) as u16;
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
        }
    }
    Ok(held
        .iter()
        .map(|l| l.local_addr().expect("a bound listener").port())
        .collect())
}

/// `n` random bytes from the kernel.
fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    Ok(bytes)
}

fn random_u32() -> Result<u32, String> {
    Ok(u32::from_le_bytes(random_bytes::<4>()?))
}

/// A random secret: 32 lowercase hex digits (no character needs quoting in SQL or in a URL).
fn random_hex() -> Result<String, String> {
    Ok(random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A three-node Galera cluster on this machine (see the [module docs](self)): dropping it (or
/// [`stop`](Self::stop)) kills its servers and removes its directory; so does the end of the
/// test process, for a cluster never dropped.
pub struct GaleraCluster {
    /// The owner's directory: `nN/` per node, nothing else that stays.
    dir: PathBuf,
    owner: Owner,
    binaries: Binaries,
    /// The cluster's name (`wsrep_cluster_name`): random, so that two clusters never merge.
    name: String,
    /// `root@127.0.0.1`'s password.
    password: String,
    ports: [Ports; NODES],
    /// Each node's server process, while it runs.
    servers: Mutex<[Option<Child>; NODES]>,
    /// The last lines each node's server wrote to stderr: what it says when it fails before
    /// its error log is open (an option it refuses, say).
    stderr: [Arc<Mutex<VecDeque<String>>>; NODES],
    /// The write end of the reaper's stdin (its end is the reaper's signal), and the reaper.
    reaper: Mutex<Option<(ChildStdin, Child)>>,
}

impl std::fmt::Debug for GaleraCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaleraCluster")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("sql_ports", &self.ports.map(|p| p.sql))
            .finish_non_exhaustive()
    }
}

impl GaleraCluster {
    /// Makes and starts a cluster (about ten seconds: the two joiners' state transfers run one
    /// after the other), returning once every node is synced in a primary component of three.
    /// `Err` says what is missing or what failed (with the end of the failing node's log).
    pub async fn start() -> Result<Self, String> {
        let binaries = Binaries::find()?;
        let owner = Owner::detect()?;
        // A port another process took between the pick and the bind fails the start: once
        // more, with new ports.
        match Self::start_once(binaries.clone(), owner).await {
            Err(e) if e.contains("Address already in use") => {
                Self::start_once(binaries, owner).await
            }
            other => other,
        }
    }

    /// One attempt at [`start`](Self::start); a failed one leaves nothing behind.
    async fn start_once(binaries: Binaries, owner: Owner) -> Result<Self, String> {
        let random = random_hex()?;
        let password = random_hex()?;
        let tag = format!("{}-{random}", std::process::id());
        let dir = std::env::temp_dir().join(format!("stockroom-galera-{tag}"));
        let ports = free_ports(NODES * 4)?;
        let ports: [Ports; NODES] = std::array::from_fn(|n| Ports {
            sql: ports[4 * n],
            gcomm: ports[4 * n + 1],
            ist: ports[4 * n + 2],
            sst: ports[4 * n + 3],
        });
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        let cluster = Self {
            dir,
            owner,
            binaries,
            // Galera refuses a group name longer than 32 bytes (at the first peer's handshake).
            name: format!("stockroom-{}", &random[..16]),
            password,
            ports,
            servers: Mutex::new([None, None, None]),
            stderr: Default::default(),
            reaper: Mutex::new(None),
        };
        // From here on, dropping the value (as a failure here does) removes everything.
        cluster.make_and_start().await?;
        Ok(cluster)
    }

    async fn make_and_start(&self) -> Result<(), String> {
        self.take_dir()?;
        self.start_reaper()?;
        self.install()?;
        for node in 0..NODES {
            self.spawn(node, node == 0)?;
            self.wait_synced(node, node + 1).await?;
        }
        Ok(())
    }

    /// Hands the directory, just made by this process, to the owner (without following a link).
    fn take_dir(&self) -> Result<(), String> {
        if let Owner::Mysql { uid, gid } = self.owner {
            std::os::unix::fs::lchown(&self.dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to mysql: {e}", self.dir.display()))?;
        }
        let meta =
            fs::symlink_metadata(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        if !meta.is_dir() || meta.uid() != self.owner.uid() || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{} is not a directory of the cluster's owner that only it can enter",
                self.dir.display()
            ));
        }
        Ok(())
    }

    /// Starts the reaper, detached, as the owner: it removes the cluster when its stdin ends.
    fn start_reaper(&self) -> Result<(), String> {
        // Without its comments, the script is the reaper's command line as `ps` shows it.
        let script: Vec<&str> = REAPER
            .lines()
            .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
            .collect();
        let mut reaper = self
            .owner
            .command(Path::new("/bin/sh"))
            .arg("-c")
            .arg(script.join("\n"))
            .arg(REAPER_NAME)
            .arg(&self.dir)
            .stdin(Stdio::piped())
            // A process group of its own: Ctrl-C on the tests must not stop the clean-up.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start the reaper (sh): {e}"))?;
        let stdin = reaper.stdin.take().expect("a piped stdin");
        *lock(&self.reaper) = Some((stdin, reaper));
        Ok(())
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("n{node}"))
    }

    fn data_dir(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("data")
    }

    fn error_log(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("error.log")
    }

    /// Makes every node's directories, and node 0's system tables with the TCP root account.
    fn install(&self) -> Result<(), String> {
        let mut dirs: Vec<OsString> = vec!["-p".into(), "--".into()];
        for node in 0..NODES {
            dirs.push(self.data_dir(node).into());
            dirs.push(self.node_dir(node).join("tmp").into());
        }
        let dirs: Vec<&std::ffi::OsStr> = dirs.iter().map(OsString::as_os_str).collect();
        self.owner.run("mkdir", &dirs)?;
        // The bootstrap of install-db runs without the privilege system, so the account is
        // written as install-db writes its own root accounts: a row of `global_priv`, every
        // privilege, the password's hash.
        let init = self.dir.join("init.sql");
        let account = format!(
            "INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ('127.0.0.1', 'root', \
             CONCAT('{{\"access\":18446744073709551615,\"plugin\":\"mysql_native_password\",\
             \"authentication_string\":\"', PASSWORD('{}'), '\"}}'));\n",
            self.password
        );
        self.owner.write_new(&init, &account)?;
        let mut install = self.owner.command(&self.binaries.install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir(0).display()))
            .arg(format!(
                "--tmpdir={}",
                self.node_dir(0).join("tmp").display()
            ))
            .arg(format!("--extra-file={}", init.display()))
            .args([
                "--skip-test-db",
                "--skip-name-resolve",
                "--innodb-log-file-size=64M",
            ])
            // install-db reports on stdout; both are kept for the error.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = install
            .output()
            .map_err(|e| format!("mariadb-install-db did not run: {e}"))?;
        let removed = self
            .owner
            .run("rm", &["-f".as_ref(), "--".as_ref(), init.as_os_str()]);
        if !out.status.success() {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let said: Vec<&str> = said
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(4)
                .collect();
            return Err(format!(
                "mariadb-install-db failed ({}): {}",
                out.status,
                said.join(" / ")
            ));
        }
        removed
    }

    /// Starts node `node`'s server (`bootstrap`: as the first node of a new cluster).
    fn spawn(&self, node: usize, bootstrap: bool) -> Result<(), String> {
        let mut servers = lock(&self.servers);
        if servers[node].is_some() {
            return Err(format!("node {node} runs already"));
        }
        let ports = self.ports[node];
        let gcomm = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.gcomm))
            .collect::<Vec<_>>()
            .join(",");
        let node_dir = self.node_dir(node);
        let mut server = self.owner.command(&self.binaries.mariadbd);
        // `--no-defaults` first, as mariadbd requires: no option file of the machine applies.
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir(node).display()))
            .arg(format!("--tmpdir={}", node_dir.join("tmp").display()))
            .arg(format!(
                "--socket={}",
                node_dir.join("mariadbd.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                node_dir.join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", self.error_log(node).display()))
            .arg(format!("--port={}", ports.sql))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--max-connections=400",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                "--innodb-autoinc-lock-mode=2",
                "--binlog-format=ROW",
                "--default-storage-engine=InnoDB",
                "--wsrep-on=ON",
                "--wsrep-sst-method=rsync",
                // One applier: in one CI run under load, a node's two parallel appliers
                // stalled ("Waiting for certification", 30 write sets queued, for minutes) and
                // every DDL of the cluster (applied in total order) waited behind them. Not
                // reproduced since, cause not found; with one applier, write sets apply in
                // order.
                "--wsrep-slave-threads=1",
            ])
            .arg(format!(
                "--wsrep-provider={}",
                self.binaries.provider.display()
            ))
            .arg(format!("--wsrep-cluster-name={}", self.name))
            .arg(format!("--wsrep-cluster-address=gcomm://{gcomm}"))
            .arg(format!("--wsrep-node-name=node{node}"))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", ports.gcomm))
            .arg(format!(
                "--wsrep-node-incoming-address=127.0.0.1:{}",
                ports.sql
            ))
            .arg(format!(
                "--wsrep-sst-receive-address=127.0.0.1:{}",
                ports.sst
            ))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};\
                 ist.recv_addr=127.0.0.1:{};{PROVIDER_OPTIONS}",
                ports.gcomm, ports.ist
            ))
            // Its own process group: a Ctrl-C on the tests is the test process's, and the
            // reaper cleans up after it.
            .process_group(0);
        if bootstrap {
            server.arg("--wsrep-new-cluster");
        }
        let mut child = server
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start node {node} (mariadbd): {e}"))?;
        let stderr = child.stderr.take().expect("a piped stderr");
        let kept = Arc::clone(&self.stderr[node]);
        lock(&kept).clear();
        // Drained to its end (the server's), so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut kept = lock(&kept);
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        servers[node] = Some(child);
        Ok(())
    }

    /// Waits until node `node` is synced in a primary component of `size` nodes, or fails with
    /// its log's end if it exits or takes longer than [`NODE_START_TIMEOUT`].
    async fn wait_synced(&self, node: usize, size: usize) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited(node) {
                return Err(format!(
                    "node {node} exited ({exit}) before it was synced; {}",
                    self.log_end(node)
                ));
            }
            let last = match self.status(node).await {
                Ok(status) if status.synced(size) => return Ok(()),
                Ok(status) => format!("{status:?}"),
                Err(e) => e,
            };
            if started.elapsed() > NODE_START_TIMEOUT {
                return Err(format!(
                    "node {node} was not synced in a cluster of {size} within \
                     {NODE_START_TIMEOUT:?} (last seen: {last}); {}",
                    self.log_end(node)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How node `node`'s process ended, if it did (and is reaped now).
    fn exited(&self, node: usize) -> Option<String> {
        let mut servers = lock(&self.servers);
        let child = servers[node].as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                servers[node] = None;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown: {e}")),
        }
    }

    fn log_end(&self, node: usize) -> String {
        let stderr: Vec<String> = lock(&self.stderr[node]).iter().cloned().collect();
        let mut said = format!(
            "its error.log ends with: {}",
            self.owner.tail(&self.error_log(node), 6)
        );
        if !stderr.is_empty() {
            said.push_str(&format!("; its stderr: {}", stderr.join(" / ")));
        }
        said
    }

    /// Node `node`'s Galera status, read on a new connection.
    pub async fn status(&self, node: usize) -> Result<NodeStatus, String> {
        let mut conn = tokio::time::timeout(Duration::from_secs(2), self.connect(node))
            .await
            .map_err(|_| format!("node {node} did not answer within 2s"))??;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME IN ('WSREP_READY', 'WSREP_CLUSTER_SIZE', \
             'WSREP_CLUSTER_STATUS', 'WSREP_LOCAL_STATE_COMMENT')",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("read node {node}'s status: {e}"))?;
        let _ = conn.close().await;
        let get = |name: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Ok(NodeStatus {
            ready: get("WSREP_READY") == "ON",
            cluster_size: get("WSREP_CLUSTER_SIZE").parse().unwrap_or(0),
            primary: get("WSREP_CLUSTER_STATUS") == "Primary",
            state: get("WSREP_LOCAL_STATE_COMMENT"),
        })
    }

    /// A new connection to node `node` as root, on no database.
    pub async fn connect(&self, node: usize) -> Result<MySqlConnection, String> {
        self.connect_options(node)
            .connect()
            .await
            .map_err(|e| format!("connect to node {node}: {e}"))
    }

    fn connect_options(&self, node: usize) -> MySqlConnectOptions {
        MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(self.ports[node].sql)
            .username("root")
            .password(&self.password)
    }

    /// Node `node`'s URL as root, on no database (`mysql://root:<password>@127.0.0.1:<port>`),
    /// for a database URL add `/<name>` (or use [`GaleraDatabase::url`]).
    ///
    /// # Panics
    ///
    /// If `node` is not below [`NODES`].
    pub fn server_url(&self, node: usize) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{}",
            self.password, self.ports[node].sql
        )
    }

    /// Node `node`'s SQL port on 127.0.0.1.
    pub fn port(&self, node: usize) -> u16 {
        self.ports[node].sql
    }

    /// Whether node `node`'s server process runs (it was started and not killed, and has not
    /// exited).
    pub fn is_running(&self, node: usize) -> bool {
        self.exited(node).is_none() && lock(&self.servers)[node].is_some()
    }

    /// The nodes whose server runs.
    pub fn running_nodes(&self) -> Vec<usize> {
        (0..NODES).filter(|&n| self.is_running(n)).collect()
    }

    /// Kills node `node`'s server with SIGKILL, as a crash would, and waits for it to be gone
    /// (with whatever state transfer it was running). The other nodes declare it gone after
    /// about 2 s, and carry on as a primary component as long as they are a majority.
    pub fn kill(&self, node: usize) -> Result<(), String> {
        let child = lock(&self.servers)[node].take();
        let Some(mut child) = child else {
            return Err(format!("node {node} does not run"));
        };
        // Already exited is fine: it is gone either way.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| format!("wait for node {node} to end: {e}"))?;
        self.sweep(node);
        Ok(())
    }

    /// Kills what is left of node `node`'s processes (the state transfer's script and rsync
    /// daemon, orphaned by a killed server): the owner's processes whose command line names a
    /// path in the node's directory. Each must be gone before the node starts again, since the
    /// rsync daemon holds its port.
    fn sweep(&self, node: usize) {
        let marker = format!("{}/", self.node_dir(node).display());
        for _round in 0..50 {
            let mut killed = 0;
            for (pid, args) in processes_of(self.owner.uid()) {
                if args
                    .iter()
                    .any(|a| a.starts_with(&marker) || a.contains(&format!("={marker}")))
                {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        killed += 1;
                    }
                }
            }
            if killed == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts node `node` again after [`kill`](Self::kill), on the same ports and data, and
    /// waits until it has rejoined (by a state transfer from a synced node) and is synced, and
    /// every running node sees it. The other nodes must be a primary component.
    pub async fn restart(&self, node: usize) -> Result<(), String> {
        self.sweep(node);
        self.spawn(node, false)?;
        let running = self.running_nodes();
        self.wait_synced(node, running.len()).await?;
        for other in running {
            self.wait_synced(other, self.running_nodes().len()).await?;
        }
        Ok(())
    }

    /// Waits until every running node is synced and sees all the running nodes (after a kill,
    /// once the others declared the killed node gone).
    pub async fn wait_all_synced(&self) -> Result<(), String> {
        let running = self.running_nodes();
        for &node in &running {
            self.wait_synced(node, running.len()).await?;
        }
        Ok(())
    }

    /// Makes a fresh database `stockroom_test_<uuid>` (on the first running node: Galera
    /// replicates the statement), and waits until every running node has it.
    ///
    /// # Panics
    ///
    /// If no node runs, or a node refuses.
    pub async fn database(&self) -> GaleraDatabase<'_> {
        let name = format!("stockroom_test_{}", Uuid::now_v7().simple());
        let node = *self.running_nodes().first().expect("a running node");
        let mut conn = self.connect(node).await.unwrap_or_else(|e| panic!("{e}"));
        let create = format!("CREATE DATABASE `{name}`");
        // Only statements built from generated names come here, never user text.
        sqlx::raw_sql(AssertSqlSafe(create.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{create} on node {node}: {e}"));
        let _ = conn.close().await;
        for other in self.running_nodes() {
            let mut conn = self.connect(other).await.unwrap_or_else(|e| panic!("{e}"));
            // A causal read: it waits until the node applied what the cluster committed
            // before it, the CREATE DATABASE included.
            sync_wait(&mut conn).await;
            let found: Option<String> = sqlx::query_scalar(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(&name)
            .fetch_optional(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("look for {name} on node {other}: {e}"));
            assert!(found.is_some(), "{name} not replicated to node {other}");
            let _ = conn.close().await;
        }
        GaleraDatabase {
            name,
            cluster: self,
        }
    }

    /// Kills every server and removes the directory, waiting for the reaper to be done. A
    /// second call does nothing.
    pub fn stop(&self) {
        for node in 0..NODES {
            let _ = self.kill(node);
        }
        let reaper = lock(&self.reaper).take();
        if let Some((stdin, mut reaper)) = reaper {
            // The end of its stdin is the reaper's signal; it removes the directory and exits.
            drop(stdin);
            let _ = reaper.wait();
        }
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `conn`, after `SET SESSION wsrep_sync_wait = 1`: its reads then wait until the node applied
/// every transaction the cluster committed before them (a causal read).
///
/// # Panics
///
/// If the node refuses.
pub async fn sync_wait(conn: &mut MySqlConnection) -> &mut MySqlConnection {
    sqlx::raw_sql("SET SESSION wsrep_sync_wait = 1")
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("SET SESSION wsrep_sync_wait: {e}"));
    conn
}

/// The processes of user `uid`, as (pid, arguments), from `/proc`.
fn processes_of(uid: u32) -> Vec<(i32, Vec<String>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            if entry.metadata().ok()?.uid() != uid {
                return None;
            }
            let raw = fs::read(entry.path().join("cmdline")).ok()?;
            let args = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, args))
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves the processes as they were: still right.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a node says of itself in Galera's status variables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// `wsrep_ready`: the node accepts queries.
    pub ready: bool,
    /// `wsrep_cluster_size`: the nodes of its component.
    pub cluster_size: usize,
    /// `wsrep_cluster_status` is `Primary`.
    pub primary: bool,
    /// `wsrep_local_state_comment`: `Synced`, `Joining`, `Donor/Desynced`, …
    pub state: String,
}

impl NodeStatus {
    /// Synced, ready, in a primary component of `size` nodes.
    pub fn synced(&self, size: usize) -> bool {
        self.ready && self.primary && self.cluster_size == size && self.state == "Synced"
    }
}

/// A database of one test on a [`GaleraCluster`], made by [`GaleraCluster::database`] and
/// dropped by [`drop_now`](Self::drop_now) or [`drop_after`](Self::drop_after).
#[derive(Debug, Clone)]
pub struct GaleraDatabase<'c> {
    name: String,
    cluster: &'c GaleraCluster,
}

impl<'c> GaleraDatabase<'c> {
    /// The database's name, `stockroom_test_<uuid>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster it lives on.
    pub fn cluster(&self) -> &'c GaleraCluster {
        self.cluster
    }

    /// Its URL on node `node`.
    pub fn url(&self, node: usize) -> String {
        format!("{}/{}", self.cluster.server_url(node), self.name)
    }

    /// Its URL through `port` on 127.0.0.1 rather than a node's own: a proxy of the test's in
    /// front of a node (which must relay the node's TLS-less protocol as it is).
    pub fn url_at(&self, port: u16) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{port}/{}",
            self.cluster.password, self.name
        )
    }

    /// A store configuration for it on node `node`: a small pool (three stores share the
    /// machine), an acquire timeout that lets a store on a killed node give up within seconds.
    pub fn config(&self, node: usize) -> StoreConfig {
        StoreConfig::new(self.url(node))
            .with_min_connections(1)
            .with_max_connections(6)
            .with_acquire_timeout(Duration::from_secs(10))
            .with_application_name(format!("{}-node{node}", self.name))
    }

    /// A store on it through node `node` with [`config`](Self::config), migrations applied.
    ///
    /// # Panics
    ///
    /// If the store cannot connect.
    pub async fn store(&self, node: usize) -> MariaDbStore {
        MariaDbStore::connect(&self.config(node))
            .await
            .unwrap_or_else(|e| panic!("connect to {} on node {node}: {e}", self.name))
    }

    /// A new connection to it on node `node`, whose reads are causal ([`sync_wait`]): they
    /// see every transaction committed on any node before them.
    ///
    /// # Panics
    ///
    /// If the node cannot be reached.
    pub async fn connection(&self, node: usize) -> MySqlConnection {
        let mut conn = self
            .cluster
            .connect_options(node)
            .database(&self.name)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {} on node {node}: {e}", self.name));
        sync_wait(&mut conn).await;
        conn
    }

    /// Drops the database (through the first running node).
    ///
    /// # Panics
    ///
    /// If no node runs, or it refuses.
    pub async fn drop_now(self) {
        let node = *self
            .cluster
            .running_nodes()
            .first()
            .expect("a running node");
        let mut conn = self
            .cluster
            .connect(node)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let drop = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        sqlx::raw_sql(AssertSqlSafe(drop.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{drop}: {e}"));
        let _ = conn.close().await;
    }

    /// Runs `body`, then drops the database whether `body` returned or panicked, and re-raises
    /// the panic if it did.
    pub async fn drop_after<T>(self, body: impl Future<Output = T>) -> T {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        self.drop_now().await;
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(12).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
        assert!(ports.iter().all(|&p| (PORT_LOW..PORT_HIGH).contains(&p)));
        // Free now that the picker let go of them.
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn secrets_are_fresh_hex() {
        let (a, b) = (random_hex().unwrap(), random_hex().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn status_is_synced_only_when_every_sign_says_so() {
        let synced = NodeStatus {
            ready: true,
            cluster_size: 3,
            primary: true,
            state: "Synced".into(),
        };
        assert!(synced.synced(3));
        assert!(!synced.synced(2));
        for not in [
            NodeStatus {
                ready: false,
                ..synced.clone()
            },
            NodeStatus {
                primary: false,
                ..synced.clone()
            },
            NodeStatus {
                state: "Joined".into(),
                ..synced.clone()
            },
        ] {
            assert!(!not.synced(3), "{not:?}");
        }
    }

    #[test]
    fn the_reaper_only_acts_on_a_cluster_directory() {
        // The script refuses any other path before it waits, so a wrong argument removes
        // nothing.
        let out = Command::new("/bin/sh")
            .args(["-c", REAPER, REAPER_NAME, "/"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(REAPER.contains(r#"rm -rf -- "$dir""#));
    }
}
