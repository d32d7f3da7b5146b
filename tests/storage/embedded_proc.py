"""Start (or adopt) the embedded server of the data directory given as the only argument,
print its DSN, then die by SIGKILL without stopping it: a crashed vpnbot."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from runtime.storage import EmbeddedPostgres

if __name__ == "__main__":
    print(EmbeddedPostgres(Path(sys.argv[1])).start_blocking(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
