"""Names a package imports on first use: imported once, kept, and unknown names refused."""

from __future__ import annotations

import sys
import types

import pytest

from runtime.lazy import lazy_exports


def test_a_name_is_imported_on_first_use_and_kept() -> None:
    package = types.ModuleType("lazy_probe")
    sys.modules["lazy_probe"] = package
    try:
        getattr_ = lazy_exports("lazy_probe", {"dumps": "json"})
        assert "dumps" not in vars(package)
        dumps = getattr_("dumps")
        assert dumps(1) == "1"
        assert vars(package)["dumps"] is dumps  # the next access is a plain attribute
        with pytest.raises(AttributeError, match="has no attribute 'loads'"):
            getattr_("loads")
    finally:
        del sys.modules["lazy_probe"]
