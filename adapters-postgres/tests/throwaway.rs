//! The harness's own servers against the other users of the machine: the throwaway cluster and
//! the replica pair let in only their owner (and root), the reaper runs as the cluster's owner,
//! and nothing the owner plants in its directory is followed, or killed, by root.
//!
//! The harness settles its server once per process, so each throwaway test runs it in a child
//! process of this binary (the ignored `child::serve`), pointed at a port nobody listens on and
//! with a temporary directory of its own: the child starts a cluster and a reaper of its own,
//! never the one the other test binaries share, and with a grace of one second.
//!
//! Run as root (as CI does), the cluster belongs to the `postgres` OS user and the checks that
//! another user cannot get in run as `nobody`; run as another user, the owner is that user and
//! the checks that need a second user are skipped.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use stockroom_postgres::testing::{postgres_required, ReplicatedServers};

/// The name the reaper gives itself (its `$0`), as `ps` shows it.
const REAPER_NAME: &str = "stockroom-pg-reaper";
/// How long a test waits for the reaper to clean up after its last client: the child's grace
/// of one second, and a wide margin for a loaded machine.
const CLEANUP_BOUND: Duration = Duration::from_secs(40);

/// A uid and a gid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ids {
    uid: u32,
    gid: u32,
}

/// The ids of this process (the owner of `/proc/self` is the process's effective user).
fn me() -> Ids {
    let meta = fs::metadata("/proc/self").expect("/proc is mounted");
    Ids {
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

fn is_root() -> bool {
    me().uid == 0
}

/// The ids of the OS user `name`, through `id`.
fn user(name: &str) -> Ids {
    let id = |flag| {
        let out = Command::new("id").args([flag, name]).output().unwrap();
        assert!(out.status.success(), "no OS user {name}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    Ids {
        uid: id("-u"),
        gid: id("-g"),
    }
}

/// Who owns the harness's servers: `postgres` when the tests run as root (initdb refuses root),
/// else the tests' own user.
fn owner() -> Ids {
    if is_root() {
        user("postgres")
    } else {
        me()
    }
}

/// A fresh directory under the temporary directory, removed (with what is left in it) on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// Traversable by everyone, listed and written only by its creator: the cluster's owner must
    /// reach its own directory inside.
    fn new(what: &str) -> Self {
        // Short: the socket's path, somewhere below, must fit in 107 bytes.
        let unique = stockroom_postgres::testing::database_name();
        let dir = std::env::temp_dir().join(format!("sr-{what}-{}", &unique[unique.len() - 12..]));
        fs::DirBuilder::new().mode(0o711).create(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    /// Also after a failed test: what still runs there (a postmaster, a reaper) is ended first,
    /// so that no server outlives its directory.
    fn drop(&mut self) {
        for (pid, argv) in processes_under(&self.0) {
            // A postmaster's immediate shutdown (SIGQUIT) also frees its shared memory.
            let signal = if argv[0].ends_with("postgres") {
                "-QUIT"
            } else {
                "-KILL"
            };
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
        let started = Instant::now();
        while !processes_under(&self.0).is_empty() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The harness, run in a child process of this binary with a temporary directory of its own.
struct Harness {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Harness {
    /// Starts the child and waits for the URL of its server; `None` (after a line on stderr)
    /// when the child found no PostgreSQL to start and PostgreSQL is not required.
    fn start(tmp: &Path, env: &[(&str, OsString)]) -> Option<Self> {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child::serve", "--nocapture"])
            .args(["--test-threads=1"])
            .env("TMPDIR", tmp)
            .env(
                "STOCKROOM_TEST_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/postgres",
            )
            .env_remove("DATABASE_URL")
            .env("STOCKROOM_TEST_PG_GRACE_SECS", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let said = loop {
            match lines.next() {
                Some(line) => match line.unwrap().split_once("harness: ") {
                    Some((_, said)) => break said.to_owned(),
                    None => continue,
                },
                None => {
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "the harness's child ended without a server ({}):\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        };
        // The rest of its output is drained, so that the child never waits on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        match said.strip_prefix("url ") {
            Some(url) => Some(Self {
                child,
                stdin,
                url: url.to_owned(),
            }),
            None if postgres_required() => panic!("PostgreSQL is required: {said}"),
            None => {
                eprintln!("skipped: the harness has no PostgreSQL here: {said}");
                None
            }
        }
    }

    /// Lets the child end its test (closing its stdin) and waits for it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the harness's child failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the child, as a crashed test process dies.
    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// The processes with an argument under `dir` (the reaper, the postmaster): pid and argv.
fn processes_under(dir: &Path) -> Vec<(u32, Vec<String>)> {
    let dir = dir.to_str().unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            argv.iter()
                .any(|arg| arg.starts_with(dir))
                .then_some((pid, argv))
        })
        .collect()
}

/// The reapers watching a cluster under `dir`.
fn reapers_under(dir: &Path) -> Vec<u32> {
    processes_under(dir)
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|arg| arg == REAPER_NAME))
        .map(|(pid, _)| pid)
        .collect()
}

/// The values of a `Uid:`/`Gid:`/`Groups:` line of `/proc/<pid>/status`.
fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Waits until nothing runs under `dir` any more (the reaper stopped the cluster and left).
fn wait_until_nothing_runs_under(dir: &Path) {
    let started = Instant::now();
    loop {
        let running = processes_under(dir);
        if running.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < CLEANUP_BOUND,
            "still running under {} after {CLEANUP_BOUND:?}: {running:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The directories under `dir` (not following symbolic links), `dir` included.
fn directories_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut next = 0;
    while next < found.len() {
        if let Ok(entries) = fs::read_dir(&found[next]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    found.push(entry.path());
                }
            }
        }
        next += 1;
    }
    found
}

/// True for a cluster's data directory.
fn is_data_dir(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() && dir.join("global").is_dir()
}

/// The data directories under `dir`.
fn clusters_under(dir: &Path) -> Vec<PathBuf> {
    directories_under(dir)
        .into_iter()
        .filter(|d| is_data_dir(d))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What a server says to its owner: `SHOW listen_addresses`, the address rules of its
/// `pg_hba.conf` that let anyone in, and the directory of its binaries.
struct Settings {
    listen_addresses: String,
    open_host_rules: Vec<String>,
    bin_dir: PathBuf,
}

fn settings_of(url: &str) -> Settings {
    runtime().block_on(async {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let listen_addresses: String = sqlx::query_scalar("SHOW listen_addresses")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let open_host_rules: Vec<String> = sqlx::query_scalar(
            "SELECT format('line %s: %s %s', line_number, type, auth_method)
               FROM pg_hba_file_rules WHERE type <> 'local' AND auth_method <> 'reject'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let bin_dir: String =
            sqlx::query_scalar("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        Settings {
            listen_addresses,
            open_host_rules,
            bin_dir: bin_dir.into(),
        }
    })
}

/// Checks that only the owner (and root) can reach the server at `url`: it listens on a Unix
/// socket only, in a directory of the owner's that no one else may enter, no rule of its
/// `pg_hba.conf` lets an address in, and `nobody` running `psql` on the URL is refused.
fn only_the_owner_gets_in(url: &str) {
    let settings = settings_of(url);
    if is_root() {
        // Another user, on the URL the tests use: refused (the old harness let anyone in).
        let nobody = user("nobody");
        let psql = settings.bin_dir.join("psql");
        assert!(psql.is_file(), "no psql next to the server's binaries");
        let out = Command::new(&psql)
            .args(["-X", "-w", "-A", "-t", "-c", "SELECT current_user"])
            .arg(url)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .uid(nobody.uid)
            .gid(nobody.gid)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            !out.status.success(),
            "nobody connected to {url} as {}",
            stdout.trim()
        );
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }

    let options: PgConnectOptions = url.parse().unwrap();
    let socket_dir = options.get_socket().unwrap_or_else(|| {
        panic!(
            "{url} is reached over TCP, at {}:{}",
            options.get_host(),
            options.get_port()
        )
    });
    let meta = fs::symlink_metadata(socket_dir).unwrap();
    assert!(meta.is_dir(), "{}", socket_dir.display());
    assert_eq!(
        meta.mode() & 0o7777,
        0o700,
        "the mode of {}",
        socket_dir.display()
    );
    assert_eq!(
        meta.uid(),
        owner().uid,
        "the owner of {}",
        socket_dir.display()
    );

    assert_eq!(settings.listen_addresses, "", "no TCP at all");
    assert!(
        settings.open_host_rules.is_empty(),
        "pg_hba.conf lets addresses in: {:?}",
        settings.open_host_rules
    );
}

#[test]
fn the_throwaway_cluster_lets_in_only_its_owner() {
    let scratch = Scratch::new("access");
    let Some(harness) = Harness::start(scratch.path(), &[]) else {
        return;
    };
    only_the_owner_gets_in(&harness.url);
    harness.finish();
}

#[test]
fn the_replica_pair_lets_in_only_its_owner_and_is_removed_after() {
    let servers = match ReplicatedServers::start() {
        Ok(servers) => servers,
        Err(reason) if postgres_required() => panic!("cannot start a replica: {reason}"),
        Err(reason) => {
            eprintln!("skipped: cannot start a primary and a replica here: {reason}");
            return;
        }
    };
    let urls = [servers.primary_url(), servers.replica_url()];
    for url in &urls {
        only_the_owner_gets_in(url);
    }
    let options: PgConnectOptions = urls[0].parse().unwrap();
    let socket_dir = options.get_socket().unwrap().to_path_buf();
    drop(servers);
    assert!(
        !socket_dir.exists(),
        "{} is left behind",
        socket_dir.display()
    );
    for url in &urls {
        let refused = runtime().block_on(PgConnection::connect(url));
        assert!(refused.is_err(), "{url} still serves");
    }
}

#[test]
fn the_reaper_runs_as_the_owner_and_cleans_up_after_the_last_test_process() {
    let scratch = Scratch::new("reaper");
    let Some(harness) = Harness::start(scratch.path(), &[]) else {
        return;
    };
    let reapers = reapers_under(scratch.path());
    assert_eq!(reapers.len(), 1, "one reaper: {reapers:?}");
    let reaper = reapers[0];
    let owner = owner();
    // Real, effective, saved and filesystem ids: all the owner's, nothing left of root.
    assert_eq!(
        status_ids(reaper, "Uid:"),
        [owner.uid; 4],
        "the reaper's uids"
    );
    assert_eq!(
        status_ids(reaper, "Gid:"),
        [owner.gid; 4],
        "the reaper's gids"
    );
    if owner != me() {
        let groups = status_ids(reaper, "Groups:");
        assert!(
            !groups.contains(&me().gid),
            "the reaper keeps the group {}: {groups:?}",
            me().gid
        );
    }
    assert_eq!(clusters_under(scratch.path()).len(), 1);

    harness.finish();
    // Once the last test process has gone, the reaper stops the cluster, removes it and leaves.
    wait_until_nothing_runs_under(scratch.path());
    assert_eq!(clusters_under(scratch.path()), Vec::<PathBuf>::new());
}

/// The PostgreSQL binaries the harness would find (`STOCKROOM_TEST_PG_BIN_DIR`, `PATH`, the
/// newest `/usr/lib/postgresql/<version>/bin`), or `None`.
fn pg_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("STOCKROOM_TEST_PG_BIN_DIR") {
        return Some(PathBuf::from(dir)).filter(|d| complete(d));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    std::env::split_paths(&path)
        .chain(versioned.into_iter().map(|(_, dir)| dir))
        .find(|dir| complete(dir))
}

/// Runs `script` with `/bin/sh` as `who`, `args` as its `$1`….
fn sh_as(who: Ids, script: &str, args: &[&Path]) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .current_dir("/")
        .uid(who.uid)
        .gid(who.gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An owner who turned against root (through a superuser session of its cluster, say) plants,
/// in every directory it controls, a symbolic link to a file of root's and the pid of a process
/// of root's where the postmaster's pid was; and `pg_ctl` is gone, so that the reaper falls back
/// to the pid it finds. The test process then dies. Root touches neither file nor process.
#[test]
fn root_follows_nothing_the_owner_planted() {
    if !is_root() {
        eprintln!("skipped: the owner and root are one user here; nothing to guard");
        return;
    }
    let Some(real_bin) = pg_bin_dir() else {
        // The child would find nothing either, and say so.
        eprintln!("skipped: no PostgreSQL binaries");
        return;
    };
    let scratch = Scratch::new("planted");
    // The binaries through a directory of the test's own, so that pg_ctl can be taken away.
    let bin = scratch.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["initdb", "postgres", "pg_basebackup"] {
        std::os::unix::fs::symlink(real_bin.join(name), bin.join(name)).unwrap();
    }
    fs::copy(real_bin.join("pg_ctl"), bin.join("pg_ctl")).unwrap();
    // A file of root's, where the owner cannot reach it itself.
    let vault = scratch.path().join("vault");
    fs::DirBuilder::new().mode(0o700).create(&vault).unwrap();
    let victim = vault.join("victim");
    fs::write(&victim, "root's\n").unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    // A process of root's.
    let mut foreign = Foreign(
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let Some(harness) = Harness::start(
        scratch.path(),
        &[("STOCKROOM_TEST_PG_BIN_DIR", bin.clone().into())],
    ) else {
        return;
    };
    let owner = owner();
    let reapers = reapers_under(scratch.path());
    assert_eq!(reapers.len(), 1, "one reaper: {reapers:?}");
    let clusters = clusters_under(scratch.path());
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    let postmaster: u32 = fs::read_to_string(clusters[0].join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let owned: Vec<PathBuf> = directories_under(scratch.path())
        .into_iter()
        .filter(|d| fs::symlink_metadata(d).is_ok_and(|m| m.uid() == owner.uid))
        .collect();
    assert!(!owned.is_empty(), "the owner has a directory of its own");
    for dir in &owned {
        if is_data_dir(dir) {
            sh_as(
                owner,
                r#"sed -i "1s/.*/$2/" "$1/postmaster.pid""#,
                &[dir, Path::new(&foreign.0.id().to_string())],
            );
            continue;
        }
        if dir.ancestors().any(is_data_dir) {
            continue; // inside a cluster: the server's own files
        }
        sh_as(
            owner,
            r#"for name in heartbeat port clients/"$3"; do
                   [ -d "$(dirname "$1/$name")" ] && ln -sfn "$2" "$1/$name"
               done; true"#,
            &[dir, &victim, Path::new(&foreign.0.id().to_string())],
        );
    }
    fs::remove_file(bin.join("pg_ctl")).unwrap();

    harness.crash();
    // The reaper does its work once the crashed process's grace is over, and leaves.
    let reaper_alive = || Path::new(&format!("/proc/{}", reapers[0])).exists();
    let started = Instant::now();
    while reaper_alive() && started.elapsed() < CLEANUP_BOUND {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !reaper_alive(),
        "the reaper still runs after {CLEANUP_BOUND:?}"
    );
    let foreign_alive = foreign.0.try_wait().unwrap().is_none();
    drop(foreign);
    // The postmaster pg_ctl could not stop: the test's to end.
    let _ = Command::new("kill")
        .args(["-QUIT", &postmaster.to_string()])
        .status();

    assert!(foreign_alive, "root's process was killed");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's\n");
    let modified = fs::metadata(&victim).unwrap().modified().unwrap();
    assert_eq!(modified, long_ago, "root's file was touched");
    assert_eq!(
        fs::read_dir(&vault).unwrap().count(),
        1,
        "a file appeared next to root's"
    );
}

/// A process of the test's, killed when dropped (also when the test fails).
struct Foreign(Child);

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the tests above run in a child process.
mod child {
    use std::io::Read;

    use stockroom_postgres::testing::{server, TestDatabase};

    /// Settles the harness's server, says where it is (`harness: url …`, or `harness: none`),
    /// uses a database on it, and holds on until stdin closes.
    #[tokio::test]
    #[ignore = "run in a child process by the tests above"]
    async fn serve() {
        let Some(server) = server().await else {
            println!("harness: none");
            return;
        };
        let db = TestDatabase::create().await.unwrap();
        println!("harness: url {}", server.url());
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new()))
            .await
            .unwrap()
            .unwrap();
        db.drop_now().await;
    }
}
