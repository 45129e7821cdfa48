# Stops the throwaway test cluster and removes its files once no test process has used it for a
# grace period. Started detached, as the cluster's owner (never as root), by the test process
# that found no reaper; see cluster.rs.
#
# stdin: the `reaper` lock, taken (exclusive) by the process that started this reaper and held
#        through this descriptor for as long as the reaper runs, so that no second one starts
# $1: the owner's directory (data/ and server.log inside)
# $2: the `lock` the test processes take to look at, start or join the cluster
# $3: the `clients` lock, held (shared) by every test process that uses the cluster until it
#     exits: the kernel drops the lock of a process however it ends, so no pid is kept anywhere
# $4: the grace period, in seconds
# $5: pg_ctl
dir=$1 lock=$2 clients=$3 grace=$4 pg_ctl=$5
# Read-only: a lock needs no more, and the files are the test user's.
exec 8<"$clients" || exit 1

# Succeeds when no test process holds the clients lock.
no_clients() {
    flock -n -x 8 || return 1
    flock -u 8
}

idle=0
while sleep 1; do
    if ! no_clients; then
        idle=0
        continue
    fi
    idle=$((idle + 1))
    [ "$idle" -lt "$grace" ] && continue
    # Under the lock no test process can join between the last look and the removal.
    exec 9<"$lock" || exit 1
    flock -x 9
    if no_clients; then
        "$pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1
        # pg_ctl could not run (126, 127: its directory is gone since): SIGQUIT to the
        # postmaster is the same immediate shutdown. Only a number is taken from the file, and
        # as the owner the signal can reach none but the owner's processes.
        if [ $? -ge 126 ]; then
            pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
            case $pid in
                '' | *[!0-9]*) ;;
                *) kill -QUIT "$pid" 2>/dev/null ;;
            esac
        fi
        rm -rf -- "$dir/data" "$dir/server.log"
        exit 0
    fi
    exec 9<&-
    idle=0
done
