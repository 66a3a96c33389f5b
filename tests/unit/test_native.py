"""The hot path runs compiled exactly when the build says so (``gateway/native.py``).

``./dev test`` runs the suite twice: interpreted (``GATEWAY_EXPECT_NATIVE=0``) and from
``build/native`` with the hot path compiled by mypyc (``GATEWAY_EXPECT_NATIVE=1``). This test
makes sure the second pass really exercised compiled code, and the first did not.
"""

from __future__ import annotations

import importlib
import os
import runpy
from pathlib import Path

import pytest

from gateway import native


def test_every_listed_module_exists_and_is_typed_python() -> None:
    for name in native.COMPILED_MODULES:
        module = importlib.import_module(name)
        assert module.__name__ == name
    source = Path(native.__file__).with_suffix(".py")
    # setup.py reads the list without importing the gateway: the module must stand alone.
    assert runpy.run_path(str(source))["COMPILED_MODULES"] == native.COMPILED_MODULES


@pytest.mark.skipif(
    os.environ.get("GATEWAY_EXPECT_NATIVE") is None, reason="run by ./dev test, which says"
)
def test_the_build_is_the_one_expected() -> None:
    expected = os.environ["GATEWAY_EXPECT_NATIVE"] == "1"
    if expected:
        assert native.compiled() == list(native.COMPILED_MODULES)
        assert (
            native.describe()
            == f"hot path compiled (mypyc, {len(native.COMPILED_MODULES)} modules)"
        )
    else:
        assert native.compiled() == []
        assert native.describe() == "hot path interpreted"
