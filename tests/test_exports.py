"""The public surface is small, sorted, and exactly what ``__all__`` says."""

from __future__ import annotations

from types import ModuleType

import pytest

import modelhost
import modelhost.client


def _public_names(module: ModuleType) -> list[str]:
    """What ``from module import ...`` offers a user: every public name that is not a
    submodule (importing a submodule makes it an attribute of its package)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    )


@pytest.mark.parametrize("module", [modelhost, modelhost.client], ids=lambda m: m.__name__)
def test_each_public_module_exports_a_sorted_all_of_names_that_exist(module: ModuleType) -> None:
    names = module.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", [modelhost, modelhost.client], ids=lambda m: m.__name__)
def test_all_names_every_public_name_of_the_module_and_nothing_else(module: ModuleType) -> None:
    declared = [name for name in module.__all__ if not name.startswith("_")]
    assert declared == _public_names(module)


def test_the_package_exports_what_the_client_does() -> None:
    assert set(modelhost.client.__all__) <= set(modelhost.__all__)
