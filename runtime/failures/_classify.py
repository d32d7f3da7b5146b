"""Classification: one table turns any exception into a ``Failure``.

How an exception is classified:

1. The exception is walked as a chain: ``__cause__`` (``raise X from Y``) and ``__context__``
   (raised while handling another) unless the context was suppressed (``raise X from None``).
   Cycles are cut. Exception groups with one member stand for that member (trio's strict
   groups); groups with several members are classified member by member (see below).
2. For each exception in the chain, the first rule of ``RULES`` that matches it gives a class
   and a precedence tier. Rules match project and stdlib classes with ``isinstance`` and
   third-party classes by qualified class name, anywhere in the MRO, so this module imports
   none of aiogram, asyncpg or httpx.
3. The match with the highest tier wins; between equal tiers, the outermost exception wins.
   Exceptions that match no rule are transparent: a bare ``RuntimeError`` wrapping a
   ``ConnectionResetError`` is an infrastructure failure.
4. Nothing matched: a bug, not transient.
5. The winning match also names the failing dependency, if any: the ``dependency`` that a
   project exception was raised with, or the rule's (asyncpg's connection errors name the
   database, Telegram's network and server errors name Telegram). Errors that concern one
   request only (a lock timeout, a user who blocked the bot) name none: the dependency is
   working, the request is not.

Tiers, highest first:

- ``EXPLICIT``: the project's own bases (the raiser classified the failure on purpose) and
  the builtin programming errors (``NameError``, ``TypeError``, ``KeyError``, ``ValueError``
  ...: bugs whoever raised them). The latter are never wrappers, so a bug in an
  ``except ConnectionError:`` block stays a bug instead of taking the class of the error it
  was handling.
- ``SPECIFIC``: named library exceptions with a clear meaning (``httpx.ConnectError``,
  ``TelegramRetryAfter``, asyncpg's connection errors, ``trio.TooSlowError``). They beat the
  stdlib errors they wrap: an httpx timeout is a dependency failure, not the socket's
  ``TimeoutError``.
- ``GENERIC``: the stdlib ``OSError`` family.
- ``CATCHALL``: library base classes that say little (``TelegramAPIError``, asyncpg's
  ``InterfaceError``): anything more precise in the chain wins over them.

A group with several members takes the class of its most severe member (bug, then infra,
then dependency, then domain; non-transient before transient) and is transient only when
every member is. Members that are control-flow signals are ignored.

Control-flow signals (``trio.Cancelled``, ``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``: everything that is not an ``Exception``) are not failures. ``classify``
raises ``TypeError`` for them rather than answer "bug": a cancellation must propagate, never
be logged, retried or alerted on as a bug. ``is_control_flow`` tells them apart first.

Decision on integrity violations (``UniqueViolationError``, ``CheckViolationError``...):
**bug**. Writes that may legitimately meet a duplicate (a repeated webhook, a retried
activation) are written as ``INSERT ... ON CONFLICT`` or guarded state transitions, or catch
the violation and raise a ``DomainError``. A violation that reaches the classifier means an
invariant on money or access tables was broken by code that did not expect it: it must
alert, which a domain error would not.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._errors import (
    DATABASE,
    TELEGRAM,
    DependencyError,
    DomainError,
    Failure,
    FailureType,
    InfraError,
)

MESSAGE_LIMIT = 1000
"""Longer exception messages (an HTML error page, say) are cut to this many characters."""

_CHAIN_LIMIT = 100
"""At most this many exceptions of one chain are looked at."""


class Tier(enum.IntEnum):
    """Precedence of a rule's match over the other matches in the same chain."""

    UNMATCHED = 0
    CATCHALL = 1
    GENERIC = 2
    SPECIFIC = 3
    EXPLICIT = 4


Transience = bool | Callable[[BaseException], bool]
Naming = str | Callable[[BaseException], str | None] | None


@dataclass(frozen=True, slots=True)
class Rule:
    """``match`` is a class (``isinstance``) or a qualified class name looked up in the MRO."""

    match: type[BaseException] | str
    type: FailureType
    transient: Transience
    tier: Tier
    dependency: Naming = None
    """The dependency that fails when this rule matches (or a function that reads it)."""

    def matches(self, exc: BaseException) -> bool:
        if isinstance(self.match, str):
            return self.match in _mro_names(type(exc))
        return isinstance(exc, self.match)

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(self.transient, bool):
            return self.transient
        return self.transient(exc)

    def names(self, exc: BaseException) -> str | None:
        if self.dependency is None or isinstance(self.dependency, str):
            return self.dependency
        return self.dependency(exc)


def _declared(exc: BaseException) -> bool:
    """The ``transient`` flag given by whoever raised the project exception."""
    return bool(getattr(exc, "transient", True))


def _declared_dependency(exc: BaseException) -> str | None:
    """The ``dependency`` given by whoever raised the project exception."""
    value = getattr(exc, "dependency", None)
    return value if isinstance(value, str) and value else None


def _http_status_transient(exc: BaseException) -> bool:
    """Server errors (but 501), 408, 425 and 429 can pass; other client errors will not."""
    status = _status_code(exc)
    if status is None:
        return False
    return status in (408, 425, 429) or (500 <= status <= 599 and status != 501)


DOMAIN, DEPENDENCY, INFRA, BUG = (
    FailureType.DOMAIN,
    FailureType.DEPENDENCY,
    FailureType.INFRA,
    FailureType.BUG,
)
EXPLICIT, SPECIFIC, GENERIC, CATCHALL = Tier.EXPLICIT, Tier.SPECIFIC, Tier.GENERIC, Tier.CATCHALL

# The classification table. For one exception the first matching row wins, so subclasses
# come before their bases. Across a chain the highest tier wins (see the module docstring).
RULES: tuple[Rule, ...] = (
    # -- the project's own bases: the raiser decided -----------------------------------------
    Rule(DomainError, DOMAIN, False, EXPLICIT),
    Rule(DependencyError, DEPENDENCY, _declared, EXPLICIT, _declared_dependency),
    Rule(InfraError, INFRA, _declared, EXPLICIT, _declared_dependency),
    # -- builtin programming errors: bugs, whatever they were raised while handling ----------
    Rule(NameError, BUG, False, EXPLICIT),
    Rule(AttributeError, BUG, False, EXPLICIT),
    Rule(TypeError, BUG, False, EXPLICIT),
    Rule(AssertionError, BUG, False, EXPLICIT),
    Rule(ImportError, BUG, False, EXPLICIT),
    Rule(NotImplementedError, BUG, False, EXPLICIT),
    Rule(RecursionError, BUG, False, EXPLICIT),
    Rule(LookupError, BUG, False, EXPLICIT),
    Rule(ArithmeticError, BUG, False, EXPLICIT),
    Rule(ValueError, BUG, False, EXPLICIT),
    # -- trio ---------------------------------------------------------------------------------
    Rule("trio.TooSlowError", INFRA, True, SPECIFIC),
    # -- httpx: every outbound call of a plugin goes to a dependency -------------------------
    Rule("httpx.HTTPStatusError", DEPENDENCY, _http_status_transient, SPECIFIC),
    # A URL with a scheme httpx cannot speak: configuration, retrying cannot help.
    Rule("httpx.UnsupportedProtocol", DEPENDENCY, False, SPECIFIC),
    # We built a request the protocol forbids (a newline in a header value, say).
    Rule("httpx.LocalProtocolError", BUG, False, SPECIFIC),
    Rule("httpx.TimeoutException", DEPENDENCY, True, SPECIFIC),
    Rule("httpx.TransportError", DEPENDENCY, True, SPECIFIC),
    Rule("httpx.DecodingError", DEPENDENCY, False, SPECIFIC),
    Rule("httpx.TooManyRedirects", DEPENDENCY, False, SPECIFIC),
    # -- aiogram: Telegram ------------------------------------------------------------------
    Rule("aiogram.exceptions.TelegramRetryAfter", DEPENDENCY, True, SPECIFIC, TELEGRAM),
    # A subclass of TelegramNetworkError, but a file too large stays too large.
    Rule("aiogram.exceptions.TelegramEntityTooLarge", DEPENDENCY, False, SPECIFIC),
    Rule("aiogram.exceptions.TelegramNetworkError", DEPENDENCY, True, SPECIFIC, TELEGRAM),
    Rule("aiogram.exceptions.TelegramServerError", DEPENDENCY, True, SPECIFIC, TELEGRAM),
    # Usually a proxy's error page instead of Telegram's JSON: it passes.
    Rule("aiogram.exceptions.ClientDecodeError", DEPENDENCY, True, SPECIFIC, TELEGRAM),
    Rule("aiogram.exceptions.TelegramForbiddenError", DEPENDENCY, False, SPECIFIC),
    Rule("aiogram.exceptions.TelegramBadRequest", DEPENDENCY, False, SPECIFIC),
    # The token is refused: every call to Telegram fails the same way.
    Rule("aiogram.exceptions.TelegramUnauthorizedError", DEPENDENCY, False, SPECIFIC, TELEGRAM),
    Rule("aiogram.exceptions.TelegramNotFound", DEPENDENCY, False, SPECIFIC),
    # 409: another poller, or a webhook is set; it does not go away by retrying.
    Rule("aiogram.exceptions.TelegramConflictError", DEPENDENCY, False, SPECIFIC),
    Rule("aiogram.exceptions.TelegramMigrateToChat", DEPENDENCY, False, SPECIFIC),
    # -- asyncpg: the database --------------------------------------------------------------
    # SQLSTATE 08: ConnectionDoesNotExistError, ConnectionFailureError,
    # ClientCannotConnectError, ConnectionRejectionError...
    Rule("asyncpg.exceptions.PostgresConnectionError", INFRA, True, SPECIFIC, DATABASE),
    # SQLSTATE 57014, a statement timeout or cancel: this statement, not the server.
    Rule("asyncpg.exceptions.QueryCanceledError", INFRA, True, SPECIFIC),
    # SQLSTATE 57: CannotConnectNowError (starting up), AdminShutdownError,
    # CrashShutdownError.
    Rule("asyncpg.exceptions.OperatorInterventionError", INFRA, True, SPECIFIC, DATABASE),
    # SQLSTATE 53300 before its class 53: connections free up, a full disk does not.
    Rule("asyncpg.exceptions.TooManyConnectionsError", INFRA, True, SPECIFIC, DATABASE),
    Rule("asyncpg.exceptions.InsufficientResourcesError", INFRA, False, SPECIFIC, DATABASE),
    # SQLSTATE 40: serialization failure, deadlock; the transaction is retried whole.
    Rule("asyncpg.exceptions.TransactionRollbackError", INFRA, True, SPECIFIC),
    Rule("asyncpg.exceptions.LockNotAvailableError", INFRA, True, SPECIFIC),
    # A standby answering after a failover; the pool reconnects to the new primary.
    Rule("asyncpg.exceptions.ReadOnlySQLTransactionError", INFRA, True, SPECIFIC, DATABASE),
    # A multi-host DSN whose hosts all answer and none takes writes: a failover under way.
    Rule(
        "asyncpg.exceptions._base.TargetServerAttributeNotMatched",
        INFRA,
        True,
        SPECIFIC,
        DATABASE,
    ),
    # SQLSTATE 28: wrong credentials.
    Rule(
        "asyncpg.exceptions.InvalidAuthorizationSpecificationError",
        INFRA,
        False,
        SPECIFIC,
        DATABASE,
    ),
    # SQLSTATE 23: see "Decision on integrity violations" above.
    Rule("asyncpg.exceptions.IntegrityConstraintViolationError", BUG, False, SPECIFIC),
    # -- the stdlib: network and disk -------------------------------------------------------
    Rule(FileNotFoundError, INFRA, False, GENERIC),
    Rule(PermissionError, INFRA, False, GENERIC),
    Rule(IsADirectoryError, INFRA, False, GENERIC),
    Rule(NotADirectoryError, INFRA, False, GENERIC),
    Rule(TimeoutError, INFRA, True, GENERIC),
    Rule(ConnectionError, INFRA, True, GENERIC),
    Rule(OSError, INFRA, True, GENERIC),
    # -- library catch-alls: anything more precise in the chain wins --------------------------
    Rule("aiogram.exceptions.TelegramAPIError", DEPENDENCY, False, CATCHALL),
    # Misuse ("another operation is in progress"), unless its context says the connection died.
    Rule("asyncpg.exceptions._base.InterfaceError", BUG, False, CATCHALL),
)


def is_control_flow(exc: BaseException) -> bool:
    """True for cancellations, interrupts and exits (and groups made only of them)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_control_flow(member) for member in exc.exceptions)
    return not isinstance(exc, Exception)


def classify(exc: BaseException) -> Failure:
    """Classify ``exc`` by its whole chain; see the module docstring.

    Raises ``TypeError`` for control-flow signals (``is_control_flow``): they are not failures.
    """
    if is_control_flow(exc):
        raise TypeError(
            f"{qualified_name(type(exc))} is a control-flow signal (cancellation, interrupt "
            "or exit), not a failure: let it propagate instead of classifying it"
        )
    return _decide(exc).failure


def qualified_name(cls: type[BaseException]) -> str:
    """``module.QualName``, or just ``QualName`` for builtins."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True)
class _Match:
    failure: Failure
    tier: Tier


_SEVERITY = {BUG: 3, INFRA: 2, DEPENDENCY: 1, DOMAIN: 0}


def _decide(exc: BaseException) -> _Match:
    best: _Match | None = None
    for node in _chain(exc):
        match = _match_node(node)
        if match is not None and (best is None or match.tier > best.tier):
            best = match
    if best is not None:
        return best
    outer = _unwrap(exc)
    return _Match(_failure(outer, BUG, transient=False), Tier.UNMATCHED)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions of the chain, outermost first (breadth first), each once."""
    seen: set[int] = set()
    queue: deque[BaseException] = deque([exc])
    while queue and len(seen) < _CHAIN_LIMIT:
        node = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, BaseExceptionGroup) and len(node.exceptions) == 1:
            queue.append(node.exceptions[0])
        if node.__cause__ is not None:
            queue.append(node.__cause__)
        if node.__context__ is not None and not node.__suppress_context__:
            queue.append(node.__context__)


def _match_node(node: BaseException) -> _Match | None:
    if isinstance(node, BaseExceptionGroup):
        # A one-member group stands for its member, which the walk visits next.
        return None if len(node.exceptions) == 1 else _match_group(node)
    if not isinstance(node, Exception):
        return None
    for rule in RULES:
        if rule.matches(node):
            failure = _failure(node, rule.type, rule.is_transient(node), rule.names(node))
            return _Match(failure, rule.tier)
    return None


def _match_group(group: BaseExceptionGroup[BaseException]) -> _Match | None:
    members = [_decide(m) for m in group.exceptions if not is_control_flow(m)]
    if not members:
        return None
    worst = max(members, key=lambda m: (_SEVERITY[m.failure.type], not m.failure.transient))
    transient = all(m.failure.transient for m in members)
    message = worst.failure.message
    if len(members) > 1:
        message = f"{message} (and {len(members) - 1} more failures in the group)"
    named = {m.failure.dependency for m in members}
    failure = Failure(
        type=worst.failure.type,
        transient=transient,
        message=message,
        exception_type=worst.failure.exception_type,
        retry_after=worst.failure.retry_after if transient else None,
        dependency=named.pop() if len(named) == 1 else None,
    )
    return _Match(failure, worst.tier)


def _unwrap(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1 and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.exceptions[0]
    return exc


def _failure(
    exc: BaseException, type_: FailureType, transient: bool, dependency: str | None = None
) -> Failure:
    return Failure(
        type=type_,
        transient=transient,
        message=_message(exc),
        exception_type=qualified_name(type(exc)),
        retry_after=_retry_after(exc) if transient else None,
        dependency=dependency if type_ in (INFRA, DEPENDENCY) else None,
    )


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the failure path
        text = ""
    if not text:
        return type(exc).__name__
    if len(text) > MESSAGE_LIMIT:
        return text[:MESSAGE_LIMIT] + "..."
    return text


def _retry_after(exc: BaseException) -> float | None:
    """A peer's hint of when to try again: ``.retry_after`` or an HTTP ``Retry-After`` header."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        header = headers.get("retry-after")
    except Exception:
        return None
    if isinstance(header, str) and header.strip().isdigit():
        return float(header.strip())
    return None


def _status_code(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


_MRO_NAMES: dict[type[BaseException], frozenset[str]] = {}


def _mro_names(cls: type[BaseException]) -> frozenset[str]:
    names = _MRO_NAMES.get(cls)
    if names is None:
        names = frozenset(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)
        if len(_MRO_NAMES) < 1024:  # classes made on the fly must not grow it forever
            _MRO_NAMES[cls] = names
    return names
