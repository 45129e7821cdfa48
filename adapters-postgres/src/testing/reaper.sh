# Stops the throwaway test cluster and removes its directory once no registered client has been
# alive for a grace period. Started detached by the first test process; see cluster.rs.
#
# $1: the cluster's directory (data/ and clients/<pid> inside)
# $2: the lock file the test processes take before they start, join or leave the cluster
# $3: the grace period, in seconds
# the rest: the pg_ctl command (behind `runuser -u postgres --` when the cluster is postgres's)
dir=$1 lock=$2 grace=$3
shift 3
# The system's tools even if the PATH the tests ran with named a directory that is gone since.
PATH=$PATH:/usr/sbin:/usr/bin:/sbin:/bin

# Succeeds when a registered client is alive; forgets the dead ones.
clients_alive() {
    found=1
    for client in "$dir"/clients/*; do
        [ -e "$client" ] || continue
        if kill -0 "${client##*/}" 2>/dev/null; then found=0; else rm -f "$client"; fi
    done
    return $found
}

idle=0
while [ -d "$dir" ]; do
    sleep 1
    # The heartbeat tells the test processes that the cluster is watched.
    touch "$dir/heartbeat" 2>/dev/null
    if clients_alive; then
        idle=0
        continue
    fi
    idle=$((idle + 1))
    [ "$idle" -lt "$grace" ] && continue
    # Under the lock no client can join between the last look and the removal.
    exec 9>>"$lock"
    flock 9
    if ! clients_alive; then
        "$@" stop -D "$dir/data" -m immediate >/dev/null 2>&1
        # pg_ctl could not run (126, 127: its directory is gone since): SIGQUIT to the
        # postmaster is the same immediate shutdown.
        if [ $? -ge 126 ]; then
            kill -QUIT "$(head -n 1 "$dir/data/postmaster.pid")" 2>/dev/null
        fi
        rm -rf "$dir"
        exit 0
    fi
    exec 9>&-
    idle=0
done
