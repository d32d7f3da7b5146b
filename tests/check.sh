#!/bin/sh
# Sets everything up in .venv and runs the whole test suite: lint, types, tests.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))' || {
    echo "vpnbot needs Python 3.11 to 3.13 (set PYTHON=python3.12, say)" >&2
    exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The sandbox page is tested in a real headless browser: Chromium from the distribution.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "chromium could not be installed: the browser test will say so and skip"
fi
# The Prometheus rules shipped in deploy/ are checked with promtool, from Debian's
# prometheus package. Installed without recommends, and with services kept from starting
# (policy-rc.d, where no policy exists): nothing is left listening.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing promtool (Debian package prometheus)"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
            && policy=/usr/sbin/policy-rc.d
    fi
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends prometheus)) >/dev/null 2>&1 \
        || echo "promtool could not be installed: the rules tests will say so and skip"
    [ -z "$policy" ] || rm -f "$policy"
    # Only promtool is wanted: the server the package enables for the next boot is not.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi
# The multi-instance test (marked long) puts HAProxy in front of instances in network
# namespaces and partitions one with nftables. Services kept from starting, as above.
if ! command -v haproxy >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing haproxy and nftables"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
            && policy=/usr/sbin/policy-rc.d
    fi
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nftables \
        || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            haproxy nftables)) >/dev/null 2>&1 \
        || echo "haproxy could not be installed: the multi-instance test will say so and skip"
    [ -z "$policy" ] || rm -f "$policy"
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now haproxy >/dev/null 2>&1 || true
    fi
fi
# The packaging tests build the wheels offline with this setuptools (SPDX licenses: >= 77).
.venv/bin/python -m pip install --quiet --upgrade pip 'setuptools>=77'
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
# The example plugin is not installed here (it would join `vpnbot run`): its tests install
# it into plugins/example_package/build/, and mypy finds it by the config's mypy_path.
.venv/bin/mypy --config-file plugins/example_package/pyproject.toml \
    plugins/example_package/src/vpnbot_example plugins/example_package/tests
# The project compiled to bytecode once, as an install is: the tests start `vpnbot run` in
# many processes, and where PYTHONDONTWRITEBYTECODE is set each would compile every module.
.venv/bin/python -m compileall -q runtime plugins supervisor.py >/dev/null
# Test processes share the files, those that run whole processes first (tests/conftest.py;
# --no-loadscope-reorder keeps that order instead of xdist's biggest-file-first). Every
# core is kept busy by a spinning process, as on a loaded CI machine: no test may depend on
# the machine's speed. There, two test processes: a third loaded two busy cores past what
# the process-level tests can sample. On idle cores (VPNBOT_TEST_BUSY_CPUS=0) three: two
# leave the cores idle while tests wait on processes and peers (282 s with three, 273 s with
# four, 2,352 tests). VPNBOT_TEST_WORKERS=0 runs them in this process alone.
BUSY="${VPNBOT_TEST_BUSY_CPUS:-$(nproc 2>/dev/null || echo 2)}"
if [ "$BUSY" = 0 ]; then DEFAULT_WORKERS=3; else DEFAULT_WORKERS=2; fi
WORKERS="${VPNBOT_TEST_WORKERS:-$DEFAULT_WORKERS}"
echo "== pytest (test processes: $WORKERS, busy CPUs: $BUSY)"
.venv/bin/pytest -n "$WORKERS" --dist loadfile --no-loadscope-reorder --busy-cpus "$BUSY" "$@"
