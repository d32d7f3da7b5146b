"""What users can buy: plans and trial terms from the config, checked against the plugins."""

from ._catalog import Catalog, Plan, Price, UnknownPlan

__all__ = ["Catalog", "Plan", "Price", "UnknownPlan"]
