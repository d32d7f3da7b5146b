"""`vpnbot` commands forked from a process that imported the runtime already.

Most of a `vpnbot run` start is importing (aiogram's models of the Bot API alone are
seconds of CPU), and the process-level tests start `vpnbot run` about a hundred times. So
each test process keeps one *fork server*: started once, it imports what the commands
import, then forks a child for each start. The child is a process of its own in every way
the tests look at (its own pid, signals, exit code, output, working directory and
environment); it runs ``supervisor.py`` from its first line, the imports being the only
thing it did not do itself.

``popen`` and ``run`` are ``subprocess.Popen`` and ``subprocess.run`` for the tests: a
command ``[sys.executable, <the project's supervisor.py>, ...]`` is forked, anything else
(a command run in a network namespace, say) is started as usual. ``VPNBOT_TEST_FORKSERVER=0``
starts every command as usual (a check that the fork server hides nothing). The tests
about the start itself (signals while importing, what the service imports) start their
processes with ``subprocess``.

Run as a script, this module is the fork server: ``forkserver.py SOCKET`` listens on the
Unix socket ``SOCKET``. A connection is one start: the request (a JSON line with the
arguments, the working directory and the environment, and the child's standard input,
output and error passed as descriptors), then the server's answers, ``{"pid": N}`` once
forked and ``{"exit": CODE}`` when the child has exited (``Popen.returncode``'s
convention). The server exits when its standard input closes.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib
import io
import json
import os
import pkgutil
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.switches import switch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "supervisor.py"
_START_SECONDS = 300.0
"""How long the fork server's own start (importing the runtime once) may take."""


# -- the tests' side ---------------------------------------------------------------------------


class _Server:
    """The fork server of this test process, started at the first fork."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="vpnbot-fork-")
        self.path = os.path.join(self._dir, "socket")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = _readline_within(self.process.stdout, _START_SECONDS)
        if line.strip() != b"ready":
            self.process.kill()
            raise RuntimeError(f"the fork server did not start: {line!r}")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self._dir)


def _readline_within(stream: IO[bytes], seconds: float) -> bytes:
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return found[0] if found else b"(nothing within the deadline)"


_server: _Server | None = None
_server_lock = threading.Lock()


def _the_server() -> _Server:
    global _server
    with _server_lock:
        if _server is None or _server.process.poll() is not None:
            _server = _Server()
            atexit.register(_server.close)
        return _server


class ForkedPopen(subprocess.Popen[Any]):
    """A ``subprocess.Popen`` whose child the fork server forks: pipes, ``communicate``,
    ``send_signal`` and ``wait`` work as for any child, its exit code comes from the server."""

    _connection: socket.socket
    _answers: bytes

    def _execute_child(  # type: ignore[override]
        self,
        args: Sequence[str],
        executable: str | None,
        preexec_fn: object,
        close_fds: bool,
        pass_fds: Sequence[int],
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
        startupinfo: object,
        creationflags: int,
        shell: bool,
        p2cread: int,
        p2cwrite: int,
        c2pread: int,
        c2pwrite: int,
        errread: int,
        errwrite: int,
        *rest: object,
    ) -> None:
        request = {
            "argv": [str(a) for a in args[1:]],
            "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
            "env": dict(os.environ if env is None else env),
        }
        fds = [p2cread, c2pwrite, errwrite]
        fds = [fd if fd != -1 else standard for fd, standard in zip(fds, (0, 1, 2), strict=True)]
        self._answers = b""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(_the_server().path)
            socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], fds)
            answer = self._answer(connection, None)
        except BaseException:
            connection.close()
            raise
        finally:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]
        if "pid" not in answer:
            connection.close()
            raise OSError(errno.ECHILD, f"the fork server refused the start: {answer}")
        self._connection = connection
        self.pid = int(answer["pid"])
        self._child_created = True

    def _answer(self, connection: socket.socket, timeout: float | None) -> dict[str, Any]:
        """The server's next answer; ``TimeoutError`` when none came within ``timeout``."""
        connection.settimeout(timeout)
        while b"\n" not in self._answers:
            try:
                part = connection.recv(4096)
            except (TimeoutError, BlockingIOError):
                raise TimeoutError from None
            if not part:
                raise ConnectionError("the fork server went away")
            self._answers += part
        line, self._answers = self._answers.split(b"\n", 1)
        found: dict[str, Any] = json.loads(line)
        return found

    def _exit_code(self, timeout: float | None) -> int | None:
        try:
            answer = self._answer(self._connection, timeout)
        except TimeoutError:
            return None
        self._connection.close()
        return int(answer["exit"])

    def _internal_poll(self, _deadstate: int | None = None, **_: object) -> int | None:
        if self.returncode is None:
            if not self._waitpid_lock.acquire(False):  # type: ignore[attr-defined]
                return None
            try:
                if self.returncode is None:
                    self.returncode = self._exit_code(0)
            except ConnectionError:
                self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()  # type: ignore[attr-defined]
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with self._waitpid_lock:  # type: ignore[attr-defined]
                if self.returncode is None:
                    self.returncode = self._exit_code(left)
            if self.returncode is None and deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode


_UNSUPPORTED = ("preexec_fn", "start_new_session", "process_group", "pass_fds", "user", "group")


def forks(args: object, **kwargs: object) -> bool:
    """Whether ``popen(args, **kwargs)`` forks it from the server."""
    if (
        switch("VPNBOT_TEST_FORKSERVER") == "0"
        or not isinstance(args, list | tuple)
        or len(args) < 2
    ):
        return False
    if any(kwargs.get(name) for name in _UNSUPPORTED) or kwargs.get("shell"):
        return False
    return str(args[0]) == sys.executable and Path(str(args[1])) == SCRIPT


def popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``; a `vpnbot` command is forked from the fork server."""
    if forks(args, **kwargs):
        return ForkedPopen(args, **kwargs)
    return subprocess.Popen(args, **kwargs)


def run(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run``; a `vpnbot` command is forked from the fork server."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with popen(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        except BaseException:
            process.kill()
            raise
        code = process.poll()
        assert code is not None
    completed = subprocess.CompletedProcess(process.args, code, stdout, stderr)
    if check:
        completed.check_returncode()
    return completed


# -- the server's side ---------------------------------------------------------------------


def _preload() -> None:
    """Import what the commands import: the runtime and its plugins, and the bot's libraries
    (``vpnbot run`` imports httpx first, without HTTP/2; so does this)."""
    from runtime.app._without_http2 import import_httpx_without_http2

    import_httpx_without_http2()
    importlib.import_module("supervisor")
    from runtime.bot import BOT_LIBRARIES

    for name in BOT_LIBRARIES:
        importlib.import_module(name)
    for package in ("runtime", "plugins"):
        module = importlib.import_module(package)
        for found in pkgutil.walk_packages(module.__path__, f"{package}.", onerror=_ignore):
            if ".testing.pytest" in found.name or found.name.endswith("__main__"):
                continue
            with contextlib.suppress(Exception):
                importlib.import_module(found.name)


def _ignore(name: str) -> None:
    pass


def _stdio(env: Mapping[str, str]) -> None:
    """Standard streams made for the child's descriptors and environment, as Python makes
    them at its start (unbuffered with ``PYTHONUNBUFFERED``, line-buffered on a terminal)."""
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))

    def stream(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        writes = mode == "w"
        buffered: Any
        if writes and unbuffered:
            buffered = raw
        elif writes:
            buffered = io.BufferedWriter(raw)
        else:
            buffered = io.BufferedReader(raw)
        return io.TextIOWrapper(
            buffered,
            encoding="utf-8",
            errors=errors,
            line_buffering=raw.isatty() or (fd == 2 and not unbuffered),
            write_through=writes and unbuffered,
        )

    sys.stdin = stream(0, "r", "strict")
    sys.stdout = stream(1, "w", "strict")
    sys.stderr = stream(2, "w", "backslashreplace")


_SERVER_PATH = list(sys.path)
_SERVER_PYTHONPATH = os.environ.get("PYTHONPATH", "")


def _child_path(pythonpath: str) -> list[str]:
    """``sys.path`` as the child's own start would make it: the script's folder, its
    ``PYTHONPATH``, then the interpreter's own entries (the server's, less its script's
    folder and its ``PYTHONPATH``)."""
    own = {os.path.abspath(p) for p in _SERVER_PYTHONPATH.split(os.pathsep) if p}
    own.add(os.path.abspath(_SERVER_PATH[0]))
    rest = [p for p in _SERVER_PATH[1:] if os.path.abspath(p) not in own]
    given = [os.path.abspath(p) for p in pythonpath.split(os.pathsep) if p]
    return [str(SCRIPT.parent), *given, *rest]


def _child(request: dict[str, Any], fds: list[int], keep_out: list[Any]) -> None:
    """In the forked child: become the requested command, run it, exit with its code."""
    for each in keep_out:
        each.close()
    for fd, standard in zip(fds, (0, 1, 2), strict=True):
        os.dup2(fd, standard)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env: dict[str, str] = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    _stdio(env)
    sys.argv = [str(SCRIPT), *request["argv"][1:]]
    sys.path[:] = _child_path(env.get("PYTHONPATH", ""))
    code = 0
    try:
        import runpy

        runpy.run_path(str(SCRIPT), run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]  # as an exiting interpreter does
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _serve(path: str) -> None:
    import gc

    _preload()
    if threading.active_count() != 1:
        raise RuntimeError(f"the imports left threads running: {threading.enumerate()}")
    gc.collect()
    gc.freeze()  # the children share the imported objects' pages instead of copying them
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "start")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    children: dict[int, tuple[int, socket.socket]] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return
                elif key.data == "start":
                    connection, _ = listener.accept()
                    _start(connection, selector, children, keep_out=[listener, selector])
                else:
                    _reap(key.data, selector, children)
    finally:
        for pid, (pidfd, connection) in children.items():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(pidfd)
            connection.close()


def _start(
    connection: socket.socket,
    selector: selectors.BaseSelector,
    children: dict[int, tuple[int, socket.socket]],
    keep_out: list[Any],
) -> None:
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = connection.recv(1 << 20)
        if not more:
            break
        data += more
    try:
        request = json.loads(data)
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} descriptors, not 3")
    except ValueError as exc:
        connection.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
        connection.close()
        for fd in fds:
            os.close(fd)
        return
    pid = os.fork()
    if pid == 0:
        _child(request, fds, [*keep_out, connection])
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    children[pid] = (pidfd, connection)
    selector.register(pidfd, selectors.EVENT_READ, pid)
    connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _reap(
    pid: int, selector: selectors.BaseSelector, children: dict[int, tuple[int, socket.socket]]
) -> None:
    pidfd, connection = children.pop(pid)
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        connection.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    connection.close()


if __name__ == "__main__":
    _serve(sys.argv[1])
