"""Build hook: with ``GATEWAY_NATIVE=1`` the hot-path modules are compiled with mypyc.

Everything else about the package is in ``pyproject.toml``. Without the variable the package is
pure Python (what ``pip install .`` and ``./dev`` give by default); with it, the modules listed
in ``gateway/native.py`` are compiled to C extension modules (mypy, which carries mypyc, is then
a build requirement, and a C compiler is needed):

    GATEWAY_NATIVE=1 pip install .                       # a compiled install
    GATEWAY_NATIVE=1 python setup.py build_ext --inplace  # compiled in the checkout (./dev native)
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
NATIVE = os.environ.get("GATEWAY_NATIVE", "0") == "1"


def _native_extensions() -> list[object]:
    if not NATIVE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if "egg_info" in sys.argv:  # pip asking for the build requirements: mypy comes next
            return []
        raise SystemExit(
            "GATEWAY_NATIVE=1 needs mypy (it carries mypyc): pip install 'mypy>=2.4'"
        ) from None

    modules = runpy.run_path(str(HERE / "gateway" / "native.py"))["COMPILED_MODULES"]
    paths = [str(Path(*name.split(".")).with_suffix(".py")) for name in modules]
    return list(mypycify(paths, group_name="gateway._native", opt_level="3"))


setup(
    ext_modules=_native_extensions(),
    setup_requires=["mypy>=2.4"] if NATIVE else [],
)
