"""A pytest plugin that keeps the reason of a skip raised inside a trio test.

pytest-trio runs a test in a nursery, so ``pytest.skip("why")`` reaches it wrapped in an
exception group; it re-raises a bare ``pytest.skip()``, and the summary reads "Skipped" at a
line of pytest's own. This puts the test's reason and location back. Load it with
``-p runtime.testing.skip_reasons`` (the contract kits skip what a peer cannot do, and say
why)::

    [tool.pytest.ini_options]
    addopts = "-p runtime.testing.skip_reasons"
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
from _pytest.outcomes import Skipped


def _inner_skip(error: BaseException) -> Skipped | None:
    """The one ``Skipped`` inside the exception group ``error`` was raised from, if any."""
    context = error.__context__
    if not isinstance(context, BaseExceptionGroup):
        return None
    leaves = _leaves(context)
    only = leaves[0] if len(leaves) == 1 else None
    return only if isinstance(only, Skipped) else None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    skipped = call.excinfo.value if call.excinfo is not None else None
    if not report.skipped or not isinstance(skipped, Skipped) or skipped.msg:
        return report
    inner = _inner_skip(skipped)
    if inner is not None and inner.msg:
        path, line, _ = item.location
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {inner.msg}")
    return report
