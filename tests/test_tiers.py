"""Hardware tiers as the settings define them (docs/settings.md, hardware_tiers) and what the
local backend refuses (docs/scaling.md, Hardware tiers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.settings import load_settings
from modelhost.tiers import Tier, affinity, check_local, find, parse_tiers


def test_tiers_come_from_a_settings_file_table_or_from_json_in_the_environment() -> None:
    table = {
        "small": {"cpus": 1, "memory_mb": 2048},
        "gpu": {"cpus": 4, "memory_mb": 16384, "gpus": 1},
    }
    assert parse_tiers(table) == {
        "small": Tier("small", 1.0, 2048, 0),
        "gpu": Tier("gpu", 4.0, 16384, 1),
    }
    settings = load_settings(
        overrides={},
        environ={"MODELHOST_HARDWARE_TIERS": '{"half": {"cpus": 0.5, "memory_mb": 512}}'},
    )
    assert settings.hardware_tiers == {"half": Tier("half", 0.5, 512, 0)}
    assert settings.replace(port=8001).hardware_tiers == settings.hardware_tiers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"small": {"cpus": 1}}', "tier 'small' needs cpus and memory_mb"),
        ('{"small": {"cpus": 0, "memory_mb": 1}}', "cpus must be a number above 0"),
        ('{"small": {"cpus": NaN, "memory_mb": 1}}', "cpus must be a finite number above 0"),
        ('{"small": {"cpus": Infinity, "memory_mb": 1}}', "cpus must be a finite number"),
        ('{"small": {"cpus": 1e999, "memory_mb": 1}}', "cpus must be a finite number"),
        ('{"small": {"cpus": 1' + "0" * 400 + ', "memory_mb": 1}}', "cpus must be a finite"),
        ('{"small": {"cpus": 1, "memory_mb": 0.5}}', "memory_mb must be a whole number"),
        ('{"small": {"cpus": 1, "memory_mb": 1, "gpus": -1}}', "gpus must be a whole number"),
        ('{"small": {"cpus": 1, "memory_mb": 1, "disk": 5}}', "unknown keys ['disk']"),
        ("[1]", "expected a table of tiers"),
        ("{not json", "expected a JSON object of tiers"),
    ],
)
def test_a_bad_tier_stops_the_server_at_start_up_naming_it(value: str, message: str) -> None:
    with pytest.raises(errors.InvalidSetting, match="hardware_tiers") as raised:
        load_settings(overrides={}, environ={"MODELHOST_HARDWARE_TIERS": value})
    assert message in raised.value.message


@pytest.mark.parametrize("cpus", ["nan", "inf", "+inf"])
def test_a_tier_in_the_settings_file_with_cpus_that_are_not_finite_stops_the_server(
    tmp_path: Path, cpus: str
) -> None:
    # docs/settings.md, hardware_tiers: cpus is a finite number above 0; TOML writes nan and inf
    (tmp_path / "modelhost.toml").write_text(
        f"[hardware_tiers.small]\ncpus = {cpus}\nmemory_mb = 512\n"
    )
    with pytest.raises(errors.InvalidSetting, match="hardware_tiers") as raised:
        load_settings(environ={"MODELHOST_HOME": str(tmp_path)})
    assert "tier 'small': cpus must be a finite number above 0" in raised.value.message


def test_an_unknown_tier_names_the_tiers_there_are() -> None:
    with pytest.raises(
        errors.BadRequest, match="No hardware tier named 'huge'; the tiers are: small"
    ):
        find({"small": Tier("small", 1, 100)}, "huge")


def test_an_unknown_tier_on_a_server_without_tiers_says_there_are_none() -> None:
    with pytest.raises(errors.BadRequest) as refused:
        find({}, "huge")
    assert refused.value.message == (
        "No hardware tier named 'huge': this server defines none (setting hardware_tiers); ask "
        "its admin to add one, or use no tier."
    )


def test_the_local_backend_refuses_a_tier_with_more_cpus_than_the_machine_or_any_gpu() -> None:
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(
        errors.BadRequest, match=f"needs {cores + 1:g} CPUs and this machine has {cores}"
    ):
        check_local(Tier("big", cores + 1, 100))
    with pytest.raises(errors.BadRequest, match="needs 1 GPU"):
        check_local(Tier("gpu", 1, 100, 1))
    with pytest.raises(errors.BadRequest, match="MB of memory and this machine has"):
        check_local(Tier("fat", 1, 10**9))
    check_local(Tier("small", 1, 100))  # fits: no error


def test_a_local_instance_runs_on_as_many_cores_as_its_tier_has_cpus_rounded_up() -> None:
    cores = sorted(os.sched_getaffinity(0))
    assert affinity(1) == cores[:1]
    assert affinity(0.5) == cores[:1]
    assert affinity(len(cores)) == cores
