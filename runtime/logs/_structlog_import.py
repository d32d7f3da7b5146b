"""structlog imported without rich.

structlog imports rich when it is installed (a development tool brings it along) for its
pretty tracebacks, which our console renderer does not use (``plain_traceback``): that is
about 3 MB of a service's memory and a tenth of a second of its start, for nothing. While
structlog is imported, ``rich`` is made unimportable; afterwards it is importable again for
whatever else wants it.
"""

from __future__ import annotations

import importlib
import sys


def import_structlog_without_rich() -> None:
    """Import structlog, keeping rich out unless something imported it already."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("structlog")
    finally:
        if sys.modules.get("rich", False) is None:
            del sys.modules["rich"]


import_structlog_without_rich()
