"""Build guarddb's C guard with cffi (API mode, out of line) into ``guarddb._guard``.

Two ways in:

* ``python build.py`` compiles the extension in place under ``src/guarddb``
  (handy while developing with ``PYTHONPATH=src``);
* hatchling loads :class:`CustomBuildHook` from this file (see pyproject.toml),
  which compiles it into every wheel and editable install.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile
from typing import Any

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

# What Python sees of guard.h: its constants and functions (the parts between
# the cffi markers), and of the slot only the fields that error messages
# read, and the counters of guard_stats(); `...;` leaves the layout to the compiler.
SLOT_FIELDS = """
typedef struct guard_slot {
    uintptr_t busy;
    uintptr_t owner;
    uint32_t waiters;
    uint64_t calls;
    uint64_t waits;
    uint64_t wait_ns_total;
    uint64_t wait_ns_max;
    uint64_t held_since_ns;
    uint64_t last_used_ns;
    ...;
} guard_slot;
"""


def _marked_parts(header: pathlib.Path) -> list[str]:
    parts = header.read_text().split("/* cffi:begin")[1:]
    return [part.split("*/", 1)[1].split("/* cffi:end */")[0] for part in parts]


# The binding's own C, compiled into the extension before cffi's wrappers.
#
# cffi releases and retakes the GIL around every C call: about 800 of the 1,400
# instructions a call costs (callgrind), twice per statement.  The guard's
# functions never block, so the wrappers are made to keep the GIL, by giving
# the two macros cffi's wrappers use an empty body from here on.  The one call
# that blocks, guard_enter_wait(), gets its own wrapper first, which releases
# the GIL around the wait with the real macros.  Likewise the wrappers' saving
# and restoring of errno for ``ffi.errno`` (a thread-local look-up each way,
# about 110 instructions a call), which guarddb never reads.
PREAMBLE = """
#include "guard.h"

static int guard_enter_wait_without_gil(guard_slot *slot, int flags, int64_t timeout_ns,
                                        uintptr_t me, uint64_t since_ns)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = guard_enter_wait(slot, flags, timeout_ns, me, since_ns);
    Py_END_ALLOW_THREADS
    return rc;
}

#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
#undef _cffi_restore_errno
#undef _cffi_save_errno
#define _cffi_restore_errno() ((void)0)
#define _cffi_save_errno() ((void)0)
"""

_constants, _functions = _marked_parts(CSRC / "guard.h")
CDEF = (
    _constants
    + SLOT_FIELDS
    + _functions
    + "int guard_enter_wait_without_gil(guard_slot *slot, int flags, int64_t timeout_ns,"
    + " uintptr_t me, uint64_t since_ns);\n"
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "guarddb._guard",
    PREAMBLE,
    sources=[str(CSRC / "guard.c")],
    include_dirs=[str(CSRC)],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
    libraries=["pthread"],
)


def compile_into(target_dir: pathlib.Path) -> pathlib.Path:
    """Compile the extension; put the shared library into ``target_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        built = pathlib.Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        target = target_dir / built.name
        # A new file renamed over the old one, never the old one rewritten: a process
        # that has the old one mapped (a test run, a bench) keeps it intact.
        fresh = target.with_name(f".{target.name}.new")
        fresh.write_bytes(built.read_bytes())
        fresh.replace(target)
    return target


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # plain `python build.py`, no hatchling around
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """hatchling hook: compile the guard and ship it inside the wheel."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        self._tmp = tempfile.mkdtemp(prefix="guarddb-cffi-")
        library = compile_into(pathlib.Path(self._tmp))
        build_data["force_include"][str(library)] = f"guarddb/{library.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)


def _run_pypa_build() -> None:
    """``python -m build`` in this directory finds this file before PyPA's ``build``
    package (the current directory comes first on sys.path): hand over to the package."""
    import runpy

    here = str(HERE)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", here)]
    sys.modules.pop("build", None)
    runpy.run_module("build", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if __spec__ is not None and __spec__.name == "build":
        _run_pypa_build()
    else:
        print(compile_into(HERE / "src" / "guarddb"), file=sys.stderr)
