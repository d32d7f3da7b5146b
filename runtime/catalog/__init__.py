"""What users can buy: plans and trial terms from the config, checked against the plugins."""

from ._audience import AUDIENCES, Customer, admits
from ._catalog import Catalog, Plan, Price, UnknownPlan

__all__ = ["AUDIENCES", "Catalog", "Customer", "Plan", "Price", "UnknownPlan", "admits"]
