# Kills a throwaway Galera cluster's processes and removes its directory once the test process
# that started it is gone, however it ended. Started detached, as the cluster's owner (never as
# root), by the test process, before anything is made in the directory; see galera.rs.
#
# stdin: a pipe whose write end only the test process holds. It is never written to: its end
#        (EOF) is the test process exiting, or stopping the cluster, and the kernel closes it
#        whatever way the process ends.
# $1: the cluster's directory (every node's files, and nothing else, are inside it)
dir=$1
case $dir in
    /*/stockroom-galera-*) ;;
    *) exit 1 ;;
esac
cat >/dev/null
# The cluster's processes are the owner's whose command line names a path inside the
# directory: each node's mariadbd (--datadir=<dir>/nN/data) and, during a state transfer, its
# wsrep_sst_rsync script and rsync daemon. This shell names the directory itself, without the
# trailing slash, so it never matches. As the owner, it can signal nothing but the owner's.
sweep() {
    found=
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = "$$" ] && continue
        args=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
        case " $args" in
            *" $dir/"* | *"=$dir/"*)
                kill -KILL "$pid" 2>/dev/null && found="$found $pid" ;;
        esac
    done
}
# Again until none is left (a script may have started a child between two looks), for at most
# about ten seconds.
rounds=0
while sweep && [ -n "$found" ] && [ "$rounds" -lt 100 ]; do
    rounds=$((rounds + 1))
    sleep 0.1
done
rm -rf -- "$dir"
