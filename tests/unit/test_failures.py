"""Failure classification and the escalation policy, as table tests."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import aiogram.exceptions as tg
import asyncpg.exceptions as pg  # type: ignore[import-untyped]
import httpx
import pytest
import trio
from aiogram.methods import SendMessage

from runtime.failures import (
    ALERTING_OPERATIONS,
    DATABASE,
    ESCALATION_POLICY,
    TELEGRAM,
    DependencyError,
    DomainError,
    Escalation,
    Failure,
    FailureType,
    InfraError,
    classify,
    escalation_for,
    is_control_flow,
)
from runtime.failures._classify import MESSAGE_LIMIT, RULES, Rule, Tier
from runtime.plugin_api.peer import PeerClient

TG = TELEGRAM
DOMAIN, DEPENDENCY, INFRA, BUG = (
    FailureType.DOMAIN,
    FailureType.DEPENDENCY,
    FailureType.INFRA,
    FailureType.BUG,
)
METHOD = SendMessage(chat_id=1, text="hi")
REQUEST = httpx.Request("GET", "https://panel.example/api")


def http_status(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    response = httpx.Response(status, request=REQUEST, headers=headers)
    return httpx.HTTPStatusError(f"status {status}", request=REQUEST, response=response)


@dataclass(frozen=True)
class Case:
    make: Callable[[], BaseException]
    type: FailureType
    transient: bool
    dependency: str | None = None
    """The failing dependency the failure names: only when the dependency itself fails."""

    def __repr__(self) -> str:
        return type(self.make()).__name__


# One case per rule of the table at least (checked by test_every_rule_has_a_case).
SINGLE = [
    # project bases
    Case(lambda: DomainError("plan not found"), DOMAIN, False),
    Case(lambda: DependencyError("panel down"), DEPENDENCY, True),
    Case(lambda: DependencyError("x", dependency="marzban"), DEPENDENCY, True, "marzban"),
    Case(lambda: DependencyError("bad api key", transient=False), DEPENDENCY, False),
    Case(lambda: InfraError("disk slow"), INFRA, True),
    Case(lambda: InfraError("gone", dependency=DATABASE), INFRA, True, DATABASE),
    Case(lambda: InfraError("schema missing", transient=False), INFRA, False),
    # builtin programming errors
    Case(lambda: NameError("x"), BUG, False),
    Case(lambda: AttributeError("x"), BUG, False),
    Case(lambda: TypeError("x"), BUG, False),
    Case(lambda: AssertionError("x"), BUG, False),
    Case(lambda: ImportError("x"), BUG, False),
    Case(lambda: NotImplementedError("x"), BUG, False),
    Case(lambda: RecursionError("x"), BUG, False),
    Case(lambda: KeyError("x"), BUG, False),
    Case(lambda: ZeroDivisionError("x"), BUG, False),
    Case(lambda: ValueError("x"), BUG, False),
    # trio
    Case(trio.TooSlowError, INFRA, True),
    # httpx
    Case(lambda: http_status(503), DEPENDENCY, True),
    Case(lambda: http_status(404), DEPENDENCY, False),
    Case(lambda: httpx.UnsupportedProtocol("ftp"), DEPENDENCY, False),
    Case(lambda: httpx.LocalProtocolError("bad header"), BUG, False),
    Case(lambda: httpx.ReadTimeout("slow"), DEPENDENCY, True),
    Case(lambda: httpx.ConnectError("refused"), DEPENDENCY, True),
    Case(lambda: httpx.RemoteProtocolError("peer closed"), DEPENDENCY, True),
    Case(lambda: httpx.DecodingError("gzip"), DEPENDENCY, False),
    Case(lambda: httpx.TooManyRedirects("loop"), DEPENDENCY, False),
    # aiogram
    Case(lambda: tg.TelegramRetryAfter(METHOD, "flood", retry_after=3), DEPENDENCY, True, TG),
    Case(lambda: tg.TelegramEntityTooLarge(METHOD, "too big"), DEPENDENCY, False),
    Case(lambda: tg.TelegramNetworkError(METHOD, "reset"), DEPENDENCY, True, TG),
    Case(lambda: tg.TelegramServerError(METHOD, "502"), DEPENDENCY, True, TG),
    Case(lambda: tg.RestartingTelegram(METHOD, "restarting"), DEPENDENCY, True, TG),
    Case(lambda: tg.ClientDecodeError("bad json", ValueError(), "<html>"), DEPENDENCY, True, TG),
    Case(lambda: tg.TelegramForbiddenError(METHOD, "bot was blocked"), DEPENDENCY, False),
    Case(lambda: tg.TelegramBadRequest(METHOD, "chat not found"), DEPENDENCY, False),
    Case(lambda: tg.TelegramUnauthorizedError(METHOD, "unauthorized"), DEPENDENCY, False, TG),
    Case(lambda: tg.TelegramNotFound(METHOD, "not found"), DEPENDENCY, False),
    Case(lambda: tg.TelegramConflictError(METHOD, "other getUpdates"), DEPENDENCY, False),
    Case(lambda: tg.TelegramMigrateToChat(METHOD, "migrated", 42), DEPENDENCY, False),
    Case(lambda: tg.TelegramAPIError(METHOD, "something"), DEPENDENCY, False),
    # asyncpg
    Case(lambda: pg.ConnectionDoesNotExistError("closed"), INFRA, True, DATABASE),
    Case(lambda: pg.ConnectionFailureError("failed"), INFRA, True, DATABASE),
    Case(lambda: pg.PostgresConnectionError("08000"), INFRA, True, DATABASE),
    Case(lambda: pg.CannotConnectNowError("starting up"), INFRA, True, DATABASE),
    Case(lambda: pg.AdminShutdownError("terminating"), INFRA, True, DATABASE),
    Case(lambda: pg.QueryCanceledError("statement timeout"), INFRA, True),
    Case(lambda: pg.TooManyConnectionsError("too many"), INFRA, True, DATABASE),
    Case(lambda: pg.DiskFullError("disk full"), INFRA, False, DATABASE),
    Case(lambda: pg.SerializationError("could not serialize"), INFRA, True),
    Case(lambda: pg.DeadlockDetectedError("deadlock"), INFRA, True),
    Case(lambda: pg.LockNotAvailableError("nowait"), INFRA, True),
    Case(lambda: pg.ReadOnlySQLTransactionError("read-only"), INFRA, True, DATABASE),
    Case(lambda: pg.TargetServerAttributeNotMatched("no host"), INFRA, True, DATABASE),
    Case(lambda: pg.InvalidPasswordError("password"), INFRA, False, DATABASE),
    Case(lambda: pg.UniqueViolationError("duplicate key"), BUG, False),
    Case(lambda: pg.CheckViolationError("check"), BUG, False),
    Case(lambda: pg.InterfaceError("another operation is in progress"), BUG, False),
    # stdlib
    Case(lambda: FileNotFoundError(2, "missing"), INFRA, False),
    Case(lambda: PermissionError(13, "denied"), INFRA, False),
    Case(lambda: IsADirectoryError(21, "is a dir"), INFRA, False),
    Case(lambda: NotADirectoryError(20, "not a dir"), INFRA, False),
    Case(lambda: TimeoutError(), INFRA, True),
    Case(lambda: ConnectionResetError(104, "reset"), INFRA, True),
    Case(lambda: BrokenPipeError(32, "pipe"), INFRA, True),
    Case(lambda: OSError(5, "io"), INFRA, True),
    Case(lambda: ssl.SSLError("handshake"), INFRA, True),
    # nothing matches: a bug
    Case(lambda: RuntimeError("unexpected"), BUG, False),
    Case(lambda: Exception("plain"), BUG, False),
    Case(lambda: pg.DataError("invalid input"), BUG, False),
    Case(lambda: tg.AiogramError("x"), BUG, False),
    Case(lambda: httpx.InvalidURL("x"), BUG, False),
]


@pytest.mark.parametrize("case", SINGLE, ids=repr)
def test_classify_table(case: Case) -> None:
    exc = case.make()
    failure = classify(exc)
    assert (failure.type, failure.transient) == (case.type, case.transient)
    assert failure.exception_type.endswith(type(exc).__qualname__)
    assert failure.dependency == case.dependency


def test_every_rule_has_a_case() -> None:
    def first_rule(exc: BaseException) -> int | None:
        return next((i for i, rule in enumerate(RULES) if rule.matches(exc)), None)

    hit = {first_rule(case.make()) for case in SINGLE}
    assert [rule.match for i, rule in enumerate(RULES) if i not in hit] == []


@pytest.mark.parametrize(
    "rule", [r for r in RULES if isinstance(r.match, str)], ids=lambda rule: str(rule.match)
)
def test_every_named_rule_names_a_real_exception(rule: Rule) -> None:
    name = str(rule.match)
    module_name, _, attribute = name.rpartition(".")
    cls = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    assert f"{cls.__module__}.{cls.__qualname__}" == name


def test_failures_import_neither_aiogram_nor_asyncpg() -> None:
    code = (
        "import sys, runtime.failures; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aiogram', 'asyncpg')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (502, True), (503, True), (504, True), (429, True), (408, True),
     (501, False), (400, False), (401, False), (403, False), (404, False), (409, False)],
)  # fmt: skip
def test_http_status_transience(status: int, transient: bool) -> None:
    failure = classify(http_status(status))
    assert failure.type is DEPENDENCY
    assert failure.transient is transient


def test_identifies_the_exception_that_decided() -> None:
    failure = classify(pg.ConnectionDoesNotExistError("connection was closed"))
    assert failure == Failure(
        type=INFRA,
        transient=True,
        message="connection was closed",
        exception_type="asyncpg.exceptions.ConnectionDoesNotExistError",
        dependency=DATABASE,
    )
    assert classify(KeyError("k")).exception_type == "KeyError"


# -- chains -----------------------------------------------------------------------------------


def chained(
    outer: Callable[[], BaseException], inner: BaseException, *, cause: bool
) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            if cause:
                raise outer() from exc
            raise outer()  # noqa: B904 -- the implicit context is the point
    except BaseException as exc:
        return exc


def test_asyncpg_interface_error_is_classified_by_its_context() -> None:
    exc = chained(
        lambda: pg.InterfaceError("cannot perform operation: connection is closed"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        cause=False,
    )
    failure = classify(exc)
    assert (failure.type, failure.transient) == (INFRA, True)
    assert failure.exception_type == "asyncpg.exceptions.ConnectionDoesNotExistError"
    assert failure.message == "connection was closed in the middle of operation"


def test_interface_error_with_a_dead_socket_in_its_context_is_infra() -> None:
    exc = chained(lambda: pg.InterfaceError("closed"), ConnectionResetError(), cause=False)
    assert classify(exc).type is INFRA


@pytest.mark.parametrize(
    ("outer", "inner", "cause", "expected"),
    [
        # an unknown wrapper is transparent
        (lambda: RuntimeError("while crediting"), ConnectionResetError(), True, (INFRA, True)),
        (lambda: RuntimeError("while crediting"), ConnectionResetError(), False, (INFRA, True)),
        # a bug in an except block stays a bug
        (lambda: NameError("oops"), ConnectionResetError(), False, (BUG, False)),
        (lambda: KeyError("oops"), httpx.ConnectError("x"), False, (BUG, False)),
        # the raiser's explicit class wins over what it wraps
        (lambda: DomainError("paid"), pg.UniqueViolationError("dup"), True, (DOMAIN, False)),
        (lambda: DependencyError("panel", transient=False), OSError(), True, (DEPENDENCY, False)),
        (lambda: InfraError("db"), ValueError(), True, (INFRA, True)),
        # a library's specific error beats the stdlib error it wraps
        (lambda: httpx.ConnectError("refused"), ConnectionRefusedError(), True, (DEPENDENCY, True)),
        (lambda: tg.TelegramNetworkError(METHOD, "x"), TimeoutError(), False, (DEPENDENCY, True)),
        # and a precise cause beats a library catch-all
        (lambda: tg.TelegramAPIError(METHOD, "x"), pg.AdminShutdownError("x"), True, (INFRA, True)),
    ],
)
def test_classify_chain(
    outer: Callable[[], BaseException],
    inner: BaseException,
    cause: bool,
    expected: tuple[FailureType, bool],
) -> None:
    failure = classify(chained(outer, inner, cause=cause))
    assert (failure.type, failure.transient) == expected


def test_suppressed_context_is_not_followed() -> None:
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise RuntimeError("translated") from None
    except RuntimeError as exc:
        failure = classify(exc)
    assert (failure.type, failure.exception_type) == (BUG, "RuntimeError")


def test_cycles_in_the_chain_terminate() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert classify(a).type is BUG
    c = ConnectionResetError()
    c.__cause__ = c
    assert classify(c).type is INFRA
    d, e = RuntimeError("d"), TimeoutError()
    d.__cause__, e.__context__ = e, d
    assert classify(d).type is INFRA


def test_long_chain_is_bounded() -> None:
    exc: BaseException = ConnectionResetError()
    for _ in range(10_000):
        wrapper = RuntimeError("wrap")
        wrapper.__cause__ = exc
        exc = wrapper
    assert classify(exc).type is BUG  # the root is out of reach; nothing else matched


# -- exception groups -------------------------------------------------------------------------


def test_single_member_groups_are_unwrapped() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ConnectionResetError(104, "x")])])
    failure = classify(group)
    assert (failure.type, failure.transient) == (INFRA, True)
    assert failure.exception_type == "ConnectionResetError"
    assert classify(ExceptionGroup("g", [RuntimeError("boom")])).exception_type == "RuntimeError"


def test_single_member_group_member_chain_is_followed() -> None:
    inner = chained(lambda: pg.InterfaceError("x"), pg.ConnectionFailureError("y"), cause=False)
    assert classify(BaseExceptionGroup("g", [inner])).type is INFRA


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([ConnectionResetError(), TimeoutError()], (INFRA, True)),
        ([ConnectionResetError(), DomainError("x")], (INFRA, False)),
        ([DomainError("x"), httpx.ReadTimeout("x")], (DEPENDENCY, False)),
        ([DomainError("x"), ValueError("x")], (BUG, False)),
        ([DomainError("x"), DomainError("y")], (DOMAIN, False)),
    ],
)
def test_multi_member_group_takes_its_most_severe_member(
    members: list[Exception], expected: tuple[FailureType, bool]
) -> None:
    failure = classify(ExceptionGroup("several", members))
    assert (failure.type, failure.transient) == expected
    assert "1 more" in failure.message


def test_the_dependency_is_the_deciding_exceptions() -> None:
    """A bug met while handling a lost connection is ours, not the database's; a lost
    connection under a bare wrapper is still the database's."""
    bug = chained(lambda: KeyError("row"), pg.ConnectionDoesNotExistError("x"), cause=False)
    assert (classify(bug).type, classify(bug).dependency) == (BUG, None)
    lost = chained(lambda: RuntimeError("wrapper"), pg.ConnectionDoesNotExistError("x"), cause=True)
    assert (classify(lost).type, classify(lost).dependency) == (INFRA, DATABASE)
    assert classify(DomainError("no such plan")).dependency is None


@pytest.mark.parametrize(
    ("members", "dependency"),
    [
        ([InfraError("a", dependency=DATABASE), pg.AdminShutdownError("b")], DATABASE),
        ([InfraError("a", dependency=DATABASE), DependencyError("b", dependency=TG)], None),
        ([InfraError("a", dependency=DATABASE), ConnectionResetError()], None),
    ],
)
def test_a_group_names_a_dependency_only_when_every_member_names_it(
    members: list[Exception], dependency: str | None
) -> None:
    assert classify(ExceptionGroup("several", members)).dependency == dependency


def test_control_flow_members_of_a_group_are_ignored() -> None:
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), ConnectionResetError()])
    failure = classify(group)
    assert (failure.type, failure.transient) == (INFRA, True)
    assert "more" not in failure.message


# -- control flow -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        KeyboardInterrupt(),
        SystemExit(1),
        GeneratorExit(),
        asyncio.CancelledError(),
        BaseExceptionGroup("g", [KeyboardInterrupt()]),
        BaseExceptionGroup("g", [KeyboardInterrupt(), SystemExit(0)]),
    ],
    ids=repr,
)
def test_control_flow_is_refused_not_called_a_bug(exc: BaseException) -> None:
    assert is_control_flow(exc)
    with pytest.raises(TypeError, match="control-flow signal"):
        classify(exc)


async def test_trio_cancelled_is_refused() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as exc:
            assert is_control_flow(exc)
            with pytest.raises(TypeError):
                classify(exc)
            raise
    assert scope.cancelled_caught


def test_a_failure_whose_context_is_a_cancellation_is_still_classified() -> None:
    exc = chained(lambda: ConnectionResetError(), KeyboardInterrupt(), cause=False)
    assert not is_control_flow(exc)
    assert classify(exc).type is INFRA


# -- messages and hints -----------------------------------------------------------------------


def test_empty_message_falls_back_to_the_class_name() -> None:
    assert classify(TimeoutError()).message == "TimeoutError"


def test_long_message_is_cut() -> None:
    failure = classify(DependencyError("x" * (MESSAGE_LIMIT * 3)))
    assert len(failure.message) <= MESSAGE_LIMIT + 3


def test_broken_str_does_not_break_classification() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert classify(Weird()).message == "Weird"


@pytest.mark.parametrize(
    ("exc", "retry_after"),
    [
        (tg.TelegramRetryAfter(METHOD, "flood", retry_after=7), 7.0),
        (http_status(429, {"Retry-After": "3"}), 3.0),
        (http_status(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None),
        (DependencyError("slow down", retry_after=2.5), 2.5),
        (DependencyError("bad", transient=False, retry_after=2.5), None),
        (http_status(400, {"Retry-After": "3"}), None),
        (ConnectionResetError(), None),
    ],
    ids=repr,
)
def test_retry_after_hint(exc: BaseException, retry_after: float | None) -> None:
    assert classify(exc).retry_after == retry_after


def test_tiers_are_ordered() -> None:
    assert Tier.EXPLICIT > Tier.SPECIFIC > Tier.GENERIC > Tier.CATCHALL > Tier.UNMATCHED


# -- the escalation policy ----------------------------------------------------------------------

WARN = Escalation("warning", retry=False, alert=False)
WARN_RETRY = Escalation("warning", retry=True, alert=False)
ERROR_ALERT = Escalation("error", retry=False, alert=True)

POLICY = [
    (DOMAIN, False, WARN),
    (DOMAIN, True, WARN),
    (DEPENDENCY, False, WARN),
    (DEPENDENCY, True, WARN_RETRY),
    (INFRA, False, ERROR_ALERT),
    (INFRA, True, WARN_RETRY),
    (BUG, False, ERROR_ALERT),
    (BUG, True, ERROR_ALERT),
]


def failure_of(type_: FailureType, transient: bool) -> Failure:
    return Failure(type_, transient, "message", "SomeError")


def test_policy_covers_every_combination() -> None:
    combos = set(itertools.product(FailureType, (False, True)))
    assert set(ESCALATION_POLICY) == combos
    assert {(t, tr) for t, tr, _ in POLICY} == combos


@pytest.mark.parametrize(("type_", "transient", "expected"), POLICY)
def test_escalation_table(type_: FailureType, transient: bool, expected: Escalation) -> None:
    assert escalation_for(failure_of(type_, transient)) == expected
    assert escalation_for(failure_of(type_, transient), operation="send_notification") == expected


@pytest.mark.parametrize(
    "operation", [*sorted(ALERTING_OPERATIONS), "activation.panel_call", "payment_finalization.x"]
)
@pytest.mark.parametrize(("type_", "transient", "expected"), POLICY)
def test_alerting_operations_alert_on_any_failure(
    operation: str, type_: FailureType, transient: bool, expected: Escalation
) -> None:
    escalation = escalation_for(failure_of(type_, transient), operation=operation)
    assert escalation.alert
    assert (escalation.log_level, escalation.retry) == (expected.log_level, expected.retry)


def test_alerting_operations_are_the_money_and_access_steps() -> None:
    assert {"payment_finalization", "activation"} <= ALERTING_OPERATIONS
    assert not escalation_for(failure_of(DOMAIN, False), operation="activations").alert
    assert not escalation_for(failure_of(DOMAIN, False), operation="").alert


@pytest.mark.parametrize(("type_", "transient", "expected"), POLICY)
def test_policy_invariants(type_: FailureType, transient: bool, expected: Escalation) -> None:
    # retry only what is transient, never domain errors or bugs
    assert expected.retry == (transient and type_ in (DEPENDENCY, INFRA))
    # unexpected failures are errors and alert; expected ones are warnings and do not
    unexpected = type_ is BUG or (type_ is INFRA and not transient)
    assert expected.log_level == ("error" if unexpected else "warning")
    assert expected.alert == unexpected


@pytest.mark.parametrize("case", SINGLE, ids=repr)
def test_classified_exceptions_get_an_escalation(case: Case) -> None:
    escalation = escalation_for(classify(case.make()))
    assert escalation.retry == (case.transient and case.type in (DEPENDENCY, INFRA))


# -- the failing dependency, named where the error is made --------------------------------------


class Panel(PeerClient):
    peer = "panel"


async def test_a_peer_that_cannot_be_reached_is_named_as_the_failing_dependency() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Panel(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(DependencyError) as caught:
            await client.request("GET", "/api/health")
    finally:
        await client.aclose()
    assert classify(caught.value).dependency == "panel"


@pytest.mark.parametrize(("status", "named"), [(503, "panel"), (429, "panel"), (400, None)])
def test_a_peer_is_named_only_when_it_fails_not_when_it_refuses_a_request(
    status: int, named: str | None
) -> None:
    response = httpx.Response(status, request=REQUEST, text="no")
    error = Panel("http://127.0.0.1:9").status_error(response)
    assert classify(error).dependency == named
