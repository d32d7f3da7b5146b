"""vpnbot's runtime.

httpx tries to import its command-line client (``httpx._main``) on every import, which
loads click and pygments wherever a development tool installed them (pytest brings
pygments) and then fails on rich: tens of milliseconds and a few MB in every process, for
a client the service never runs. Its ``ImportError`` fallback is made certain here, before
anything imports httpx.
"""

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
