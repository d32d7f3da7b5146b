"""Run a command as the child of a subreaper, and report what it left running.

``python subreaper.py OUTPUT CMD...`` runs CMD with its stdout and stderr in the file
OUTPUT, prints the child's pid, waits for it, then prints one JSON line:
``{"exit": <status>, "left": [[pid, comm], ...]}``. As a subreaper it becomes the parent of
every process the child's tree orphans (a PostgreSQL that ``pg_ctl`` started, an ``initdb``
whose parent died), so what is left is found by the process tree alone. It kills what was
left (it started it) before it exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as name:
            return name.read().strip()
    except OSError:
        return "?"


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    with open(sys.argv[1], "wb") as output:
        child = subprocess.Popen(sys.argv[2:], stdout=output, stderr=subprocess.STDOUT)
    print(child.pid, flush=True)
    status = child.wait()
    # The child's orphans were handed to us when it exited, before wait() returned.
    left = [[pid, comm(pid)] for pid in children_of(os.getpid())]
    print(json.dumps({"exit": status, "left": left}), flush=True)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    for _ in left:
        os.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
