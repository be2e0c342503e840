"""CPU time of processes, for the benchmark scripts (imported by their inline Python)."""
import os

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid=None, pgid=None):
    """CPU seconds so far of process `pid`, or of every process in process group `pgid`:
    each one's user+system time plus that of the children it reaped (a Dovecot master runs in
    its own group: auth, auth-workers, checkpassword runs, Lua popen shells, IMAP and login
    processes)."""
    total = 0
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{p}/stat").read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(p) == pid or (pgid is not None and int(stat[2]) == pgid):
            total += sum(int(x) for x in stat[11:15])
    return total / TICK
