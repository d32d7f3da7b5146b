"""Plans' limits at work: used traffic shown to users, traffic top-ups for the current
period, traffic reminders and the devices of an account."""

from ._service import (
    GIB,
    TRAFFIC_START_PARAMETER,
    DeviceReset,
    NotOnSale,
    Traffic,
    TrafficStatus,
    package_problems,
    traffic_of,
)
from ._usage import UsageReader, believable

__all__ = [
    "GIB",
    "TRAFFIC_START_PARAMETER",
    "DeviceReset",
    "NotOnSale",
    "Traffic",
    "TrafficStatus",
    "UsageReader",
    "believable",
    "package_problems",
    "traffic_of",
]
