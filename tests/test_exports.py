"""The public surface is small, sorted and importable."""

from __future__ import annotations

from types import ModuleType

import pytest

import modelhost
import modelhost.client


@pytest.mark.parametrize("module", [modelhost, modelhost.client], ids=lambda m: m.__name__)
def test_each_public_module_exports_a_sorted_all_of_names_that_exist(module: ModuleType) -> None:
    names = module.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), name
