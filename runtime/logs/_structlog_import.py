"""structlog imported without what it would pull in for nothing.

structlog imports, when they are installed:

- rich (a development tool brings it along), for its pretty tracebacks, which our console
  renderer does not use (``plain_traceback``): about 3 MB of a service's memory and a tenth
  of a second of its start;
- greenlet (SQLAlchemy's asyncio support brings it along), for the deprecated
  ``structlog.threadlocal``, which we do not use: its extension module and libstdc++'s pages,
  about 0.2 MB of resident memory.

While structlog is imported, each of them that nothing imported yet is made unimportable;
afterwards it is importable again for whatever else wants it.
"""

from __future__ import annotations

import importlib
import sys

KEPT_OUT = ("rich", "greenlet")


def import_structlog_lean() -> None:
    """Import structlog, keeping out each of ``KEPT_OUT`` that nothing imported already."""
    if "structlog" in sys.modules:
        return
    blocked = [name for name in KEPT_OUT if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("structlog")
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


import_structlog_lean()
