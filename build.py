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

# What Python sees of guard.h: the functions, the result codes, and the two
# fields that error messages read.  `...;` leaves the layout to the compiler.
CDEF = """
#define GUARD_OK ...
#define GUARD_FORKED ...
#define GUARD_BUSY ...
#define GUARD_NOT_OWNER ...
#define GUARD_STRICT ...

typedef struct guard_slot {
    uintptr_t busy;
    uintptr_t owner;
    ...;
} guard_slot;

guard_slot *guard_slot_new(void);
void guard_slot_free(guard_slot *slot);
void guard_set_fd(guard_slot *slot, int fd);
int guard_forked(guard_slot *slot);
int guard_enter(guard_slot *slot, int flags);
void guard_leave(guard_slot *slot);
void guard_release(guard_slot *slot, uintptr_t holder);
int guard_adopt(guard_slot *slot);
uintptr_t guard_thread_id(void);
uint64_t guard_generation(void);
long guard_live_slots(void);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "guarddb._guard",
    '#include "guard.h"',
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
        target.write_bytes(built.read_bytes())
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
