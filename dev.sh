#!/usr/bin/env bash
# guarddb's two set-up commands, for a fresh Debian machine with only Python:
#
#   ./dev.sh demo   install what is needed, then run `python -m guarddb demo`
#   ./dev.sh test   install what is needed, then run every check CI runs
#
# What gets installed: Debian packages (a C compiler, pkg-config,
# libmariadb-dev for building mysqlclient, mariadb-server for the private test
# server, redis-server for the Celery tests' broker, valgrind for the callgrind counts, the Python headers and venv
# module when missing), then two virtual
# environments: .venv (the newest mysqlclient 2.3 and PyMySQL) and .venv-mysqlclient22
# (the oldest supported, mysqlclient 2.2.0 and PyMySQL 1.1.0), each with guarddb built
# and installed from this tree.
set -euo pipefail

cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
OLDEST_MYSQLCLIENT=${OLDEST_MYSQLCLIENT:-==2.2.0}
# The oldest PyMySQL guarddb supports, in the same venv as the oldest mysqlclient.
OLDEST_PYMYSQL=${OLDEST_PYMYSQL:-==1.1.0}
# The newest 2.3 release the registry offers, not a pin (NEWEST_MYSQLCLIENT=="2.3.1" pins).
NEWEST_MYSQLCLIENT=${NEWEST_MYSQLCLIENT:->=2.3,<2.4}
# The newest releases of everything, on the newest Python: Django 6, SQLAlchemy 2.1.
PYTHON313=${PYTHON313:-}
NOT_RUN=()

say() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
    # redis-server: the Celery tests' broker when none runs (they start a private one);
    # valgrind: callgrind counts the round trip's instructions (bench/callgrind_roundtrip.py).
    local wanted=(gcc pkg-config libmariadb-dev mariadb-server redis-server valgrind)
    if ! "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        wanted+=(python3-dev)
    fi
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        wanted+=(python3-venv)
    fi
    local missing=()
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

# make_venv DIR MYSQLCLIENT_SPEC [PYTHON]: a venv with mysqlclient$SPEC and guarddb[test]
# from this tree.
make_venv() {
    local dir=$1 mysqlclient=$2 python=${3:-$PYTHON}
    if [ ! -x "$dir/bin/python" ]; then
        say "creating $dir ($("$python" --version))"
        "$python" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
    fi
    say "installing mysqlclient$mysqlclient and guarddb into $dir"
    # mysqlclient has no Linux wheels: pip builds it against libmariadb-dev.
    "$dir/bin/python" -m pip install -q --upgrade "mysqlclient$mysqlclient"
    "$dir/bin/python" -m pip install -q --force-reinstall --no-deps .
    "$dir/bin/python" -m pip install -q ".[test,bench]"
    "$dir/bin/python" -c 'import sys
from importlib.metadata import version
print(f"{sys.argv[1]}: Python {sys.version.split()[0]}, "
      + ", ".join(f"{name} {version(name)}" for name in ("mysqlclient", "PyMySQL", "Django", "SQLAlchemy")))
' "$dir" >&2
}

# find_python313: pyenv's Python 3.13 (CI machines have it), or python3.13 on the PATH.
find_python313() {
    if [ -n "$PYTHON313" ]; then echo "$PYTHON313"; return; fi
    local candidate
    # pyenv's own builds first: a pyenv shim on the PATH fails unless 3.13 is selected.
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
        "$(command -v python3.13 || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
            2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}

run_demo() {
    install_system_packages
    make_venv .venv "$NEWEST_MYSQLCLIENT"
    say "python -m guarddb demo"
    .venv/bin/python -m guarddb demo
}

# The wheel and sdist build, and the wheel installs and imports in a fresh venv.
check_packaging() {
    say "python -m build: sdist and wheel; the wheel in a fresh venv; a wheel from the sdist"
    local out
    out=$(mktemp -d)
    .venv/bin/python -m pip install -q build
    .venv/bin/python -m build --outdir "$out/dist" . >"$out/build.log" 2>&1 \
        || { cat "$out/build.log"; return 1; }
    "$PYTHON" -m venv "$out/fresh"
    "$out/fresh/bin/python" -m pip install -q "$(ls "$out"/dist/guarddb-*.whl)[pymysql]"
    # No mysqlclient there: guarddb.pymysql must need none.
    (cd "$out" && fresh/bin/python -c \
        'import sys, guarddb, guarddb._guard, guarddb.pymysql; assert "MySQLdb" not in sys.modules
print("wheel imports: guarddb", guarddb.__version__, "and guarddb.pymysql, without mysqlclient")')
    tar -tzf "$out"/dist/guarddb-*.tar.gz >"$out/sdist.txt"
    grep -q '/csrc/guard.c$' "$out/sdist.txt" && grep -q '/build.py$' "$out/sdist.txt"
    .venv/bin/python -m pip wheel -q --no-deps -w "$out/from-sdist" "$out"/dist/guarddb-*.tar.gz
    ls "$out"/from-sdist/guarddb-*.whl >/dev/null
    rm -rf "$out"
}

run_tests() {
    install_system_packages
    make_venv .venv "$NEWEST_MYSQLCLIENT"
    make_venv .venv-mysqlclient22 "$OLDEST_MYSQLCLIENT"
    say "installing PyMySQL$OLDEST_PYMYSQL into .venv-mysqlclient22"
    .venv-mysqlclient22/bin/python -m pip install -q "PyMySQL$OLDEST_PYMYSQL"

    say "ruff"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    say "mypy (strict, pyproject.toml's [tool.mypy])"
    .venv/bin/mypy src

    check_packaging

    say "mysqlclient's own test suite, guarddb installed as MySQLdb (mysqlclient $NEWEST_MYSQLCLIENT)"
    .venv/bin/python .ci/mysqlclient_suite.py
    say "mysqlclient's own test suite, guarddb installed as MySQLdb (mysqlclient $OLDEST_MYSQLCLIENT)"
    .venv-mysqlclient22/bin/python .ci/mysqlclient_suite.py

    # Instructions, not seconds: stable under load, so a budget may fail the run.
    say "callgrind: client instructions per round trip, guarded minus plain, against budgets"
    .venv/bin/python bench/callgrind_roundtrip.py --budget

    say "guarddb's tests with mysqlclient $OLDEST_MYSQLCLIENT and PyMySQL $OLDEST_PYMYSQL"
    .venv-mysqlclient22/bin/python -m pytest -q -p no:cacheprovider tests
    say "guarddb's tests with mysqlclient $NEWEST_MYSQLCLIENT"
    .venv/bin/python -m pytest -q -p no:cacheprovider tests

    # The newest releases: Python 3.13, Django 6 (it needs Python 3.12+; the runs above
    # have Django 5.2 LTS), SQLAlchemy 2.1, the newest mysqlclient 2.3.
    local python313
    python313=$(find_python313)
    if [ -z "$python313" ]; then
        NOT_RUN+=("guarddb's tests on Python 3.13 with Django 6 and SQLAlchemy 2.1: no Python 3.13
    here (looked for \$PYTHON313, python3.13 on the PATH and pyenv's versions). Install it
    (pyenv install 3.13, or your distribution's python3.13 with its venv module and
    headers) and run again, or name it: PYTHON313=/path/to/python3.13 ./dev.sh test")
    else
        make_venv .venv-py313 "$NEWEST_MYSQLCLIENT" "$python313"
        say "mysqlclient's own test suite on Python 3.13, guarddb installed as MySQLdb"
        .venv-py313/bin/python .ci/mysqlclient_suite.py
        say "guarddb's tests on Python 3.13 (Django 6, SQLAlchemy 2.1, newest mysqlclient)"
        .venv-py313/bin/python -m pytest -q -p no:cacheprovider tests
    fi
    if [ ${#NOT_RUN[@]} -gt 0 ]; then
        say "NOT RUN (everything else passed):"
        printf '  - %s\n' "${NOT_RUN[@]}" >&2
    fi
}

case "${1:-}" in
    demo) run_demo ;;
    test) run_tests ;;
    *)
        echo "usage: $0 demo|test" >&2
        exit 2
        ;;
esac
