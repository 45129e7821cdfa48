//! A primary and its streaming replica, made for one test and removed after it.
//!
//! [`ReplicatedServers::start`] makes a primary with `initdb` in a temporary directory, starts
//! it, copies it with `pg_basebackup -R` (which writes the replica's `primary_conninfo` and
//! `standby.signal`), and starts the copy as a hot standby that streams the primary's WAL. Like
//! the throwaway cluster, both belong to the `postgres` OS user when the tests run as root, and
//! listen on no TCP address: their sockets, `.s.PGSQL.5432` (the primary) and `.s.PGSQL.5433`
//! (the replica), are in that directory, which is the owner's and mode 0700, so no other local
//! user reaches them; the replica streams through the primary's socket. Everything inside the
//! directory is done as the owner, including its removal: dropping the value stops both servers
//! at once and removes the directory.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{find_bin_dir, run, searched_places, settings, Owner, INITDB_ARGS};
use super::url::socket_url;

/// The ports of the two sockets (in a directory of their own, so no other server's clash).
const PRIMARY_PORT: u16 = 5432;
const REPLICA_PORT: u16 = 5433;

/// A primary and a streaming replica on this machine, for one test (see the module docs).
pub struct ReplicatedServers {
    dir: PathBuf,
    bin: PathBuf,
    owner: Owner,
}

impl std::fmt::Debug for ReplicatedServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedServers")
            .field("dir", &self.dir)
            .finish()
    }
}

impl ReplicatedServers {
    /// Makes and starts a primary and its replica (blocking: a few seconds; call it from
    /// `spawn_blocking`). `Err` says what is missing or what failed: no PostgreSQL binaries
    /// (`initdb`, `pg_ctl`, `postgres` and `pg_basebackup`), or a step that failed.
    pub fn start() -> Result<Self, String> {
        let bin = find_bin_dir()
            .and_then(|dir| with_basebackup(&dir))
            .ok_or_else(|| {
                format!(
                    "no PostgreSQL binaries with pg_basebackup in {}",
                    searched_places()
                )
            })?;
        let dir = std::env::temp_dir().join(format!(
            "stockroom-replica-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        // Checked before anything is made: the URLs cannot fail after.
        socket_url(&dir, PRIMARY_PORT)?;
        let owner = Owner::detect()?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        // From here on, dropping the value removes the directory, as the owner.
        let servers = Self { dir, bin, owner };
        servers.owner.take(&servers.dir)?;
        servers.start_primary()?;
        servers.start_replica()?;
        Ok(servers)
    }

    /// The primary's URL, on its `postgres` database, through its socket.
    pub fn primary_url(&self) -> String {
        socket_url(&self.dir, PRIMARY_PORT).expect("checked at start")
    }

    /// The replica's URL, on its `postgres` database, through its socket.
    pub fn replica_url(&self) -> String {
        socket_url(&self.dir, REPLICA_PORT).expect("checked at start")
    }

    /// Stops the replica at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn kill_replica(&self) -> Result<(), String> {
        self.stop("replica", "immediate")
    }

    /// Starts the replica again after [`kill_replica`](Self::kill_replica), on the same port
    /// (blocking, until it accepts connections); it recovers and streams from the primary
    /// again.
    pub fn restart_replica(&self) -> Result<(), String> {
        self.start_server("replica", REPLICA_PORT)
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = self.owner.command(&self.bin.join(program));
        command.current_dir(&self.dir);
        command
    }

    fn start_primary(&self) -> Result<(), String> {
        let data = self.data("primary");
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&data).args(INITDB_ARGS);
        run(&mut initdb, "initdb")?;
        // initdb's pg_hba.conf already lets the owner's replication connections in through the
        // socket (trust).
        let conf = data.join("postgresql.conf");
        self.owner.append(&conf, &settings(&self.dir))?;
        self.start_server("primary", PRIMARY_PORT)
    }

    fn start_replica(&self) -> Result<(), String> {
        let mut basebackup = self.command("pg_basebackup");
        basebackup
            .arg("-D")
            .arg(self.data("replica"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &PRIMARY_PORT.to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "--no-sync"]);
        run(&mut basebackup, "pg_basebackup")?;
        self.start_server("replica", REPLICA_PORT)
    }

    /// Starts the server of `<dir>/<name>` with its socket on `port`.
    fn start_server(&self, name: &str, port: u16) -> Result<(), String> {
        let log = self.dir.join(format!("{name}.log"));
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-D")
            .arg(self.data(name))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &format!("-p {port}")]);
        run(&mut start, &format!("pg_ctl start ({name})")).map_err(|e| {
            let tail = self.owner.tail(&log, 3);
            format!("{e}; {name}.log ends with: {tail}")
        })
    }

    fn stop(&self, name: &str, mode: &str) -> Result<(), String> {
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-m", mode, "-D"]).arg(self.data(name));
        run(&mut stop, &format!("pg_ctl stop ({name})"))
    }
}

impl Drop for ReplicatedServers {
    /// Stops both servers and removes the directory, all as the owner (a server already stopped
    /// is fine). Where the owner may not remove the directory itself (a temporary directory it
    /// cannot write to), the emptied directory goes by `rmdir`, which follows no link.
    fn drop(&mut self) {
        for name in ["replica", "primary"] {
            let _ = self.stop(name, "immediate");
        }
        let _ = self.owner.remove(std::slice::from_ref(&self.dir));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `dir`, or the directory its `initdb` links to (a PATH directory of symlinks may lack
/// `pg_basebackup`), whichever holds `pg_basebackup`.
fn with_basebackup(dir: &Path) -> Option<PathBuf> {
    let linked = fs::canonicalize(dir.join("initdb"))
        .ok()
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf));
    [Some(dir.to_path_buf()), linked]
        .into_iter()
        .flatten()
        .find(|dir| dir.join("pg_basebackup").is_file())
}
