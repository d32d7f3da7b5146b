"""A skip inside a trio test keeps its reason in the summary (pytest-trio drops it)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_a_skip_in_a_trio_test_reports_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_skipping="""
        import pytest
        import trio

        async def test_cannot_here():
            await trio.sleep(0)
            pytest.skip("the peer cannot be told to fail")
        """
    )
    without = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    without.assert_outcomes(skipped=1)
    assert "the peer cannot be told to fail" not in without.stdout.str()

    kept = pytester.runpytest_subprocess(
        "-rs", "-p", "no:cacheprovider", "-p", "runtime.testing.skip_reasons"
    )
    kept.assert_outcomes(skipped=1)
    kept.stdout.fnmatch_lines(["SKIPPED ?1? test_skipping.py:*: the peer cannot be told to fail"])
