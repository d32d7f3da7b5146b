"""Per-actor policy from the config, laid over each actor's own defaults."""

from __future__ import annotations

from typing import Any

from runtime.config import ActorPolicyOverride, ConfigError, ConfigProblem
from runtime.supervision import ActorSpec, Backoff, Budget, OnExhausted, Restart

_BACKOFF_FIELDS = {
    "backoff_min_seconds": "min",
    "backoff_max_seconds": "max",
    "backoff_multiplier": "multiplier",
    "backoff_jitter": "jitter",
    "backoff_reset_after_seconds": "reset_after",
}
_BUDGET_FIELDS = {
    "budget_max_failures": "max_failures",
    "budget_window_seconds": "window",
    "park_cooldown_seconds": "park_cooldown",
}


def apply_policy(spec: ActorSpec, override: ActorPolicyOverride) -> ActorSpec:
    """The spec with every key set under ``[actors.<name>]`` replacing the actor's default.

    Keys are checked one by one when the config is loaded; combinations with the actor's
    own defaults (a configured min above the default max) are checked here.
    """
    given = override.model_dump(exclude_none=True)
    backoff = {_BACKOFF_FIELDS[k]: v for k, v in given.items() if k in _BACKOFF_FIELDS}
    budget: dict[str, Any] = {_BUDGET_FIELDS[k]: v for k, v in given.items() if k in _BUDGET_FIELDS}
    if "on_exhausted" in given:
        budget["on_exhausted"] = OnExhausted(given["on_exhausted"])
    changes: dict[str, Any] = {}
    _check_backoff_order(spec, given)
    try:
        if backoff:
            changes["backoff"] = _evolve(spec.backoff, backoff)
        if budget:
            changes["budget"] = _evolve(spec.budget, budget)
    except ValueError as exc:
        raise ConfigError([ConfigProblem(f"actors.{spec.name}", str(exc))]) from exc
    if "restart" in given:
        changes["restart"] = Restart(given["restart"])
    for key, attribute in (
        ("shutdown_timeout_seconds", "shutdown_timeout"),
        ("critical", "critical"),
        ("min_sleep_on_failure_seconds", "min_sleep_on_failure"),
    ):
        if key in given:
            changes[attribute] = given[key]
    if "interval_seconds" in given:
        changes["extra"] = {**spec.extra, "interval": given["interval_seconds"]}
    return spec.evolve(**changes) if changes else spec


def _check_backoff_order(spec: ActorSpec, given: dict[str, Any]) -> None:
    """A configured bound against the actor's own other bound, said with the key to fix."""
    low = given.get("backoff_min_seconds", spec.backoff.min)
    high = given.get("backoff_max_seconds", spec.backoff.max)
    if low <= high:
        return
    if "backoff_min_seconds" in given:
        key, bound, other = "backoff_min_seconds", f"<= {high:g}", "backoff_max_seconds"
        got = low
    else:
        key, bound, other = "backoff_max_seconds", f">= {low:g}", "backoff_min_seconds"
        got = high
    reason = f"must be {bound}, this actor's {other} (got {got:g}); set {other} too"
    raise ConfigError([ConfigProblem(f"actors.{spec.name}.{key}", reason)])


def _evolve(current: Backoff | Budget, values: dict[str, Any]) -> Any:
    fields = {name: getattr(current, name) for name in current.__dataclass_fields__}
    return type(current)(**{**fields, **values})
