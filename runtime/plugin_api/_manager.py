"""Loading plugins so that one broken plugin never stops the others.

Sources, in this order: the ``vpnbot.plugins`` entry points (the built-ins declare theirs
like any third-party package), then the import paths in ``settings.plugins.paths``
(``package.module`` or ``package.module:attribute``). A plugin is skipped when its name (the
entry point name, or the import path) is in ``settings.plugins.disabled`` or in the
``VPNBOT_DISABLE_PLUGINS`` environment variable (comma-separated).

Every hook is called once, here, for every plugin: a plugin whose import, registration or
hook call fails, or whose hook returns something that is not a list of the right objects,
is recorded as a ``PluginProblem``, logged, and left out whole (its other hooks' results
too), so what the runtime gets is consistent and every problem is known before it starts.
``vpnbot_offers`` (what a plugin can provide, configured or not) is called first, the same
way.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from runtime.alerts._model import Alert, Severity
from runtime.config import ConfigError, ConfigProblem
from runtime.logs import get_logger
from runtime.supervision import ActorSpec

from . import hookspecs
from .offers import Offer, OfferKind
from .payments import WebhookReceiver
from .protocols import AlertSink, PaymentProvider, VpnBackend

if TYPE_CHECKING:
    from runtime.config import Settings

    from .services import Services

ENTRY_POINT_GROUP = "vpnbot.plugins"
DISABLE_ENV_VAR = "VPNBOT_DISABLE_PLUGINS"
SOURCE_ENTRY_POINT = "entry point"
SOURCE_CONFIG_PATH = "config path"

BUILTIN_PLUGINS: Mapping[str, str] = {
    "alert_sinks": "plugins.alert_sinks",
    "telegram_payments": "plugins.telegram_payments",
    "cryptobot": "plugins.cryptobot",
    "heleket": "plugins.heleket",
    "yookassa": "plugins.yookassa",
    "marzban": "plugins.marzban",
    "xui": "plugins.xui",
    "remnawave": "plugins.remnawave",
    "outline": "plugins.outline",
}
"""The built-in plugins' entry points, as declared in ``pyproject.toml``.

When the code runs from a source tree, without installed package metadata, these entry
points are missing; the ones missing are then added from this table, so the built-ins still
load through the same path (and the same disable switch) as third-party plugins.
"""

_log = get_logger("plugins")


@dataclass(frozen=True, slots=True)
class _Kind:
    key: str
    hook: str
    label: str
    check: Callable[[object], bool]


def _is_alert_sink(item: object) -> bool:
    return isinstance(item, AlertSink) and inspect.iscoroutinefunction(item.send)


def is_payment_provider(item: object) -> bool:
    """The ``PaymentProvider`` shape with async methods, and a ``webhook`` that is None or a
    ``WebhookReceiver`` (an async ``authenticate`` and ``parse``, a described
    ``authentication``); a ``confirm_telegram_payment``, if any, async too."""
    if not isinstance(item, PaymentProvider):
        return False
    methods = ["create_invoice", "fetch_status", "refund"]
    if hasattr(item, "confirm_telegram_payment"):
        methods.append("confirm_telegram_payment")
    if not all(inspect.iscoroutinefunction(getattr(item, m)) for m in methods):
        return False
    receiver = item.webhook
    if receiver is None:
        return True
    return (
        isinstance(receiver, WebhookReceiver)
        and isinstance(receiver.authentication, str)
        and bool(receiver.authentication.strip())
        and inspect.iscoroutinefunction(receiver.authenticate)
        and inspect.iscoroutinefunction(receiver.parse)
    )


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "payment_providers",
        "vpnbot_payment_providers",
        "PaymentProvider (async methods; webhook None or a WebhookReceiver)",
        is_payment_provider,
    ),
    _Kind("vpn_backends", "vpnbot_vpn_backends", "VpnBackend", lambda i: isinstance(i, VpnBackend)),
    _Kind("alert_sinks", "vpnbot_alert_sinks", "AlertSink (with an async send)", _is_alert_sink),
    _Kind("actors", "vpnbot_actors", "ActorSpec", lambda item: isinstance(item, ActorSpec)),
)


@dataclass(slots=True)
class PluginInfo:
    """A loaded (or disabled) plugin and what it provides, by kind, as names."""

    name: str
    source: str
    """``"entry point"`` or ``"config path"``."""
    module: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    """What its hooks returned with this config."""
    offers: list[Offer] | None = None
    """What it declares it can provide (``vpnbot_offers``); None when it declares nothing."""
    kinds: list[str] = field(default_factory=list)
    """The kinds whose hooks it implements (known without calling them)."""


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """Why a plugin was left out."""

    name: str
    source: str
    stage: str
    """``"import"``, ``"register"`` (including validation) or ``"call"`` (a hook)."""
    error: str
    hook: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def to_alert(self) -> Alert:
        """The alert the caller submits once the alert pipeline exists."""
        where = f"{self.stage} ({self.hook})" if self.hook else self.stage
        return Alert(
            severity=Severity.CRITICAL,
            key=f"plugin:{self.name}:{self.stage}",
            component="plugins",
            title=f"Plugin {self.name} left out",
            text=(
                f"The plugin {self.name} ({self.source}) failed at {where}: {self.error}. "
                "It is not running; the other plugins are."
            ),
        )


def _describe_error(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _disabled_names(settings: Settings, environ: Mapping[str, str]) -> set[str]:
    names = {str(name).strip() for name in settings.plugins.disabled}
    names.update(part.strip() for part in environ.get(DISABLE_ENV_VAR, "").split(","))
    names.discard("")
    return names


def _import_path(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    obj: object = importlib.import_module(module_name.strip())
    for part in filter(None, attribute.strip().split(".")):
        obj = getattr(obj, part)
    return obj


class LoadedPlugins:
    """The outcome of ``load_plugins``: what loaded, what did not, and what they provide."""

    def __init__(
        self, pm: pluggy.PluginManager, settings: Settings, services: Services | None
    ) -> None:
        self._pm = pm
        self._settings = settings
        self._services = services
        self.plugins: list[PluginInfo] = []
        self.problems: list[PluginProblem] = []
        self.disabled: list[PluginInfo] = []
        self._results: dict[str, list[Any]] = {kind.key: [] for kind in _KINDS}

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self._pm

    def payment_providers(self) -> list[PaymentProvider]:
        return list(self._results["payment_providers"])

    def vpn_backends(self) -> list[VpnBackend]:
        return list(self._results["vpn_backends"])

    def alert_sinks(self) -> list[AlertSink]:
        return list(self._results["alert_sinks"])

    def actors(self) -> list[ActorSpec]:
        return list(self._results["actors"])

    def problem_alerts(self) -> list[Alert]:
        """One alert per problem, for the caller to submit to the alert pipeline."""
        return [problem.to_alert() for problem in self.problems]

    def describe(self) -> list[dict[str, str]]:
        """Rows for a plugin listing: loaded, then disabled, then failed plugins.

        Keys: ``name``, ``source``, ``module``, ``status`` (loaded, disabled, failed),
        ``provides`` (what it can provide and whether this config turns it on, e.g.
        ``"vpn_backends: marzban (off: set plugins.settings.marzban)"``) and ``error``.
        """
        rows: list[dict[str, str]] = []
        for info, status in [(p, "loaded") for p in self.plugins] + [
            (p, "disabled") for p in self.disabled
        ]:
            rows.append(
                {
                    "name": info.name,
                    "source": info.source,
                    "module": info.module,
                    "status": status,
                    "provides": (
                        describe_offers(info)
                        if status == "loaded"
                        else "unknown (disabled, so not imported)"
                    ),
                    "error": "",
                }
            )
        for problem in self.problems:
            where = f"{problem.stage} ({problem.hook})" if problem.hook else problem.stage
            rows.append(
                {
                    "name": problem.name,
                    "source": problem.source,
                    "module": "",
                    "status": "failed",
                    "provides": "",
                    "error": f"{where}: {problem.error}",
                }
            )
        return rows

    # -- loading -------------------------------------------------------------------------

    def _problem(
        self,
        name: str,
        source: str,
        stage: str,
        error: str,
        *,
        hook: str | None = None,
        exception: BaseException | None = None,
    ) -> None:
        problem = PluginProblem(name, source, stage, error, hook, exception)
        self.problems.append(problem)
        _log.error(
            "plugin left out",
            plugin=name,
            source=source,
            stage=stage,
            hook=hook,
            error=error,
            failure_type="bug",
            outcome="failed",
        )

    def _register(self, name: str, source: str, module: str, plugin: object) -> None:
        pm = self._pm
        if pm.is_registered(plugin):
            _log.info(
                "plugin already loaded, skipped",
                plugin=name,
                source=source,
                loaded_as=pm.get_name(plugin),
                outcome="skipped",
            )
            return
        if pm.has_plugin(name):
            self._problem(name, source, "register", f"a plugin named {name!r} is already loaded")
            return
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            self._unregister(plugin)
            self._problem(name, source, "register", _describe_error(exc), exception=exc)
            return

        errors: list[str] = []
        for caller in pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                function = impl.function
                if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                    errors.append(
                        f"{caller.name} is async: hooks must be plain functions that return "
                        "objects with async methods"
                    )
                if impl.hookwrapper or impl.wrapper:
                    errors.append(f"{caller.name} is a hook wrapper, which is not supported")
        if not errors:
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                errors.append(str(exc))
        if errors:
            self._unregister(plugin)
            self._problem(name, source, "register", "; ".join(errors))
            return
        hooks = {caller.name for caller in pm.get_hookcallers(plugin) or []}
        kinds = [kind.key for kind in _KINDS if kind.hook in hooks]
        self.plugins.append(PluginInfo(name=name, source=source, module=module, kinds=kinds))

    def _unregister(self, plugin: object) -> None:
        if self._pm.is_registered(plugin):
            try:
                self._pm.unregister(plugin)
            except Exception as exc:  # pragma: no cover - pluggy bookkeeping failed
                _log.warning("could not unregister plugin", error=_describe_error(exc))

    def _collect(self) -> None:
        """Call every hook of every plugin once; leave out plugins that fail."""
        info_by_name = {info.name: info for info in self.plugins}
        failed: set[str] = set()
        # kind key -> [(plugin name, items)] in call order
        collected: dict[str, list[tuple[str, list[Any]]]] = {kind.key: [] for kind in _KINDS}
        call_args = {"settings": self._settings, "services": self._services}
        config_problems: list[ConfigProblem] = []

        for impl in _call_order(self._pm.hook.vpnbot_offers.get_hookimpls()):
            info = info_by_name.get(impl.plugin_name)
            if info is None:
                continue
            try:
                info.offers = _check_offers(impl.function())
            except Exception as exc:
                failed.add(info.name)
                self._problem(
                    info.name,
                    info.source,
                    "call",
                    _describe_error(exc),
                    hook="vpnbot_offers",
                    exception=exc,
                )

        for kind in _KINDS:
            caller: pluggy.HookCaller = getattr(self._pm.hook, kind.hook)
            for impl in _call_order(caller.get_hookimpls()):
                plugin_name = impl.plugin_name
                if plugin_name in failed or plugin_name not in info_by_name:
                    continue
                try:
                    result = impl.function(*(call_args[arg] for arg in impl.argnames))
                    items = _check_result(kind, result)
                except ConfigError as exc:
                    # A plugin's settings are wrong: the operator must fix the config. Every
                    # plugin is still asked, so one run reports every plugin's problems.
                    failed.add(plugin_name)
                    config_problems.extend(exc.problems)
                    continue
                except Exception as exc:
                    failed.add(plugin_name)
                    info = info_by_name[plugin_name]
                    self._problem(
                        plugin_name,
                        info.source,
                        "call",
                        _describe_error(exc),
                        hook=kind.hook,
                        exception=exc,
                    )
                    continue
                collected[kind.key].append((plugin_name, items))
        if config_problems:
            raise ConfigError(config_problems)

        # Names are unique per kind; on a clash the plugin loaded later is left out.
        seen: dict[str, set[str]] = {kind.key: set() for kind in _KINDS}
        for info in self.plugins:
            if info.name in failed:
                continue
            mine = {
                kind.key: [
                    item.name
                    for name, items in collected[kind.key]
                    if name == info.name
                    for item in items
                ]
                for kind in _KINDS
            }
            clashes = [
                f"{key} {item_name!r}"
                for key, names in mine.items()
                for item_name in names
                if item_name in seen[key]
            ]
            own_dupes = [
                f"{key} {item_name!r}"
                for key, names in mine.items()
                for item_name in set(names)
                if names.count(item_name) > 1
            ]
            if clashes or own_dupes:
                failed.add(info.name)
                self._problem(
                    info.name,
                    info.source,
                    "call",
                    "duplicate names: " + ", ".join(sorted(set(clashes + own_dupes))),
                )
                continue
            for key, names in mine.items():
                seen[key].update(names)
                if names:
                    info.provides[key] = names

        for info in [info for info in self.plugins if info.name in failed]:
            plugin = self._pm.get_plugin(info.name)
            if plugin is not None:
                self._unregister(plugin)
            self.plugins.remove(info)
        for kind in _KINDS:
            self._results[kind.key] = [
                item
                for plugin_name, items in collected[kind.key]
                if plugin_name not in failed
                for item in items
            ]


def _call_order(impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
    """Registration order, with ``tryfirst`` implementations first and ``trylast`` last."""
    return sorted(impls, key=lambda impl: 0 if impl.tryfirst else 2 if impl.trylast else 1)


def _check_result(kind: _Kind, result: object) -> list[Any]:
    if result is None:
        return []
    if inspect.iscoroutine(result):
        result.close()
    if not isinstance(result, list | tuple):
        raise TypeError(f"{kind.hook} returned {type(result).__name__}, expected a list")
    for item in result:
        if not kind.check(item):
            raise TypeError(f"{kind.hook} returned {item!r}, which is not a {kind.label}")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind.hook} returned {item!r} without a name")
    return list(result)


def _check_offers(result: object) -> list[Offer]:
    if inspect.iscoroutine(result):
        result.close()
    if not isinstance(result, list | tuple):
        raise TypeError(f"vpnbot_offers returned {type(result).__name__}, expected a list")
    seen: set[tuple[OfferKind, str]] = set()
    for offer in result:
        if not (
            isinstance(offer, Offer)
            and isinstance(offer.kind, OfferKind)
            and isinstance(offer.name, str)
            and offer.name.strip()
            and (offer.setting is None or (isinstance(offer.setting, str) and offer.setting))
        ):
            raise TypeError(
                f"vpnbot_offers returned {offer!r}, which is not an Offer(OfferKind, name, "
                "setting or None)"
            )
        if (offer.kind, offer.name) in seen:
            raise TypeError(f"vpnbot_offers declares {offer.kind} {offer.name!r} twice")
        seen.add((offer.kind, offer.name))
    return list(result)


def describe_offers(info: PluginInfo) -> str:
    """What a loaded plugin can provide, kind by kind, and whether this config turns it on.

    A plugin without ``vpnbot_offers`` shows what its hooks returned, and for the kinds
    whose hooks it implements but that returned nothing, that the names are unknown.
    """
    parts = []
    for kind in _KINDS:
        on = info.provides.get(kind.key, [])
        if info.offers is None:
            names = [f"{name} (on)" for name in on]
            if not names and kind.key in info.kinds:
                names = ["names unknown until configured"]
        else:
            mine = [offer for offer in info.offers if offer.kind == kind.key]
            names = [_offer_state(offer, on) for offer in mine]
            names += [
                f"{name} (on, undeclared)"
                for name in on
                if not any(offer.covers(name) for offer in mine)
            ]
        if names:
            parts.append(f"{kind.key}: {', '.join(names)}")
    text = "; ".join(parts) or "nothing"
    if info.offers is None:
        text += " (the plugin has no vpnbot_offers)"
    return text


def _offer_state(offer: Offer, on: list[str]) -> str:
    if offer.name in on:
        return f"{offer.name} (on)"
    family = [name for name in on if offer.covers(name)]
    if family:
        return f"{offer.name} (on: {', '.join(family)})"
    return f"{offer.name} (off: set {offer.setting})" if offer.setting else f"{offer.name} (off)"


def _with_builtins(
    found: Iterable[importlib.metadata.EntryPoint],
) -> list[importlib.metadata.EntryPoint]:
    entry_points = list(found)
    present = {ep.name for ep in entry_points}
    for name, value in BUILTIN_PLUGINS.items():
        if name not in present:
            entry_points.append(importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP))
    return entry_points


def load_plugins(
    settings: Settings,
    services: Services | None = None,
    *,
    entry_point_group: str = ENTRY_POINT_GROUP,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedPlugins:
    """Load every plugin that is not disabled; never raises because of a plugin.

    ``entry_points`` replaces the installed entry points (those of another group are
    ignored, and the ``BUILTIN_PLUGINS`` fallback is not applied); ``environ`` replaces
    ``os.environ`` for the disable switch.
    """
    environ = os.environ if environ is None else environ
    disabled = _disabled_names(settings, environ)
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm, settings, services)

    if entry_points is None:
        try:
            found: Iterable[importlib.metadata.EntryPoint] = importlib.metadata.entry_points(
                group=entry_point_group
            )
        except Exception as exc:
            _log.error("could not list plugin entry points", error=_describe_error(exc))
            found = ()
        if entry_point_group == ENTRY_POINT_GROUP:
            found = _with_builtins(found)
    else:
        found = [ep for ep in entry_points if ep.group == entry_point_group]

    for ep in found:
        source = SOURCE_ENTRY_POINT
        if {ep.name, ep.value, ep.module} & disabled:
            loaded.disabled.append(PluginInfo(name=ep.name, source=source, module=ep.value))
            _log.info("plugin disabled", plugin=ep.name, source=source, outcome="skipped")
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            loaded._problem(ep.name, source, "import", _describe_error(exc), exception=exc)
            continue
        loaded._register(ep.name, source, ep.value, plugin)

    for raw_path in settings.plugins.paths:
        path = str(raw_path).strip()
        source = SOURCE_CONFIG_PATH
        if path in disabled:
            loaded.disabled.append(PluginInfo(name=path, source=source, module=path))
            _log.info("plugin disabled", plugin=path, source=source, outcome="skipped")
            continue
        try:
            plugin = _import_path(path)
        except Exception as exc:
            loaded._problem(path, source, "import", _describe_error(exc), exception=exc)
            continue
        loaded._register(path, source, path, plugin)

    loaded._collect()
    for info in loaded.plugins:
        _log.info(
            "plugin loaded",
            plugin=info.name,
            source=info.source,
            module=info.module,
            provides={key: names for key, names in info.provides.items()},
            outcome="success",
        )
    return loaded
