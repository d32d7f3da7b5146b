"""VPN access: trials, provisioning accounts through the backends, revoking them."""

from ._service import Access, TrialUnavailable

__all__ = ["Access", "TrialUnavailable"]
