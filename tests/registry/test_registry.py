"""The plugin registry, tested against real installed distributions (hf-compress itself and the test plugin in
tests/fixtures/hf-compress-testplugin, which `.ci/run` pip-installs). Env switches are read at discovery, so cases
that set them run the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from hf_compress.registry import PluginNotInstalledError, Registry, get_registry, reset_registry

TESTPLUGIN = "hf-compress-testplugin"


def _require_testplugin():
    try:
        metadata.distribution(TESTPLUGIN)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{TESTPLUGIN} is not installed: pip install ./tests/fixtures/hf-compress-testplugin")


def plugins_json(**env) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_COMPRESS")}
    full_env.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def names_of(listing: dict, kind: str) -> dict[str, dict]:
    return {c["name"]: c for c in listing["components"] if c["kind"] == kind}


def test_builtins_register_through_the_entry_point():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="hf_compress.plugins")}
    assert entry_points.get("builtins") == "hf_compress.builtins:register"
    listing, _ = plugins_json()
    schedules = names_of(listing, "schedule")
    for name in ("constant", "one_shot", "linear", "cubic", "exponential", "cosine"):
        assert schedules[name]["distribution"] == "hf-compress"
    assert {"magnitude", "movement", "random"} <= set(names_of(listing, "pruning_criterion"))
    assert set(listing) == {"components", "broken"}
    assert set(listing["components"][0]) == {"kind", "name", "distribution", "version", "module"}


def test_third_party_plugin_is_discovered_with_its_distribution():
    _require_testplugin()
    listing, _ = plugins_json()
    step = names_of(listing, "schedule")["step"]
    assert step["distribution"] == TESTPLUGIN
    assert step["version"] == "0.0.1"
    assert step["module"] == "hf_compress_testplugin:step_schedule"
    assert listing["broken"] == []


def test_disable_autoload_keeps_builtins_only():
    _require_testplugin()
    listing, _ = plugins_json(HF_COMPRESS_DISABLE_PLUGIN_AUTOLOAD="1")
    schedules = names_of(listing, "schedule")
    assert "step" not in schedules and "cubic" in schedules


def test_plugin_allow_list():
    _require_testplugin()
    only_other, _ = plugins_json(HF_COMPRESS_PLUGINS="someone-else")
    assert "step" not in names_of(only_other, "schedule")
    allowed, _ = plugins_json(HF_COMPRESS_PLUGINS="testplugin")
    assert "step" in names_of(allowed, "schedule")
    by_distribution, _ = plugins_json(HF_COMPRESS_PLUGINS=TESTPLUGIN)
    assert "step" in names_of(by_distribution, "schedule")


def test_broken_plugin_is_logged_and_skipped():
    _require_testplugin()
    listing, stderr = plugins_json(HF_COMPRESS_TESTPLUGIN_BREAK="1")
    (broken,) = listing["broken"]
    assert broken["entry_point"] == "testplugin_broken"
    assert broken["distribution"] == TESTPLUGIN and broken["version"] == "0.0.1"
    assert "a_module_that_does_not_exist" in broken["error"]
    assert "hf-compress-testplugin" in stderr and "a_module_that_does_not_exist" in stderr
    assert "step" in names_of(listing, "schedule"), "the rest of the plugins still load"


def test_same_name_from_two_distributions_is_an_error_naming_both():
    _require_testplugin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_COMPRESS")}
    env["HF_COMPRESS_TESTPLUGIN_CLASH"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "plugins", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # The clash is a load failure of that entry point: reported as broken, naming both distributions.
    assert "hf-compress " in result.stdout + result.stderr and TESTPLUGIN in result.stdout + result.stderr
    assert "registered twice" in result.stdout + result.stderr


def test_replace_flag_replaces_on_purpose():
    _require_testplugin()
    listing, _ = plugins_json(HF_COMPRESS_TESTPLUGIN_CLASH="replace")
    assert names_of(listing, "schedule")["cubic"]["distribution"] == TESTPLUGIN
    assert listing["broken"] == []


def test_human_listing_shows_components_and_broken():
    _require_testplugin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_COMPRESS")}
    env["HF_COMPRESS_TESTPLUGIN_BREAK"] = "1"
    result = subprocess.run(["hf-compress", "plugins", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "schedule" in result.stdout and "cubic" in result.stdout and TESTPLUGIN in result.stdout
    assert "Broken plugins" in result.stdout and "testplugin_broken" in result.stdout


def test_unknown_name_lists_known_names_and_suggests_closest():
    registry = get_registry()
    with pytest.raises(ValueError) as info:
        registry.get("schedule", "cubik")
    message = str(info.value)
    assert "'cubic'" in message and "Did you mean 'cubic'" in message
    assert "linear" in message and "cosine" in message


def test_known_plugin_name_without_plugin_says_how_to_install():
    registry = Registry()
    with pytest.raises(PluginNotInstalledError, match=r"pip install ./plugins/hf-compress-wanda"):
        registry.get("pruning_criterion", "wanda")


def test_names_are_lowercase_and_kinds_known():
    registry = Registry()
    with pytest.raises(ValueError, match="lowercase"):
        registry.register("schedule", "Cubic", lambda p: p)
    with pytest.raises(ValueError, match="allowed kinds"):
        registry.register("nonsense", "x", lambda p: p)
    registry.register("schedule", "mine", lambda p: p)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("schedule", "mine", lambda p: p)
    registry.register("schedule", "mine", lambda p: p * 2, replace=True)
    assert registry.get("schedule", "MINE")(1.0) == 2.0
    with pytest.raises(TypeError):
        registry.view("schedule")["x"] = None  # read-only view


def test_discovery_is_lazy_and_happens_once():
    reset_registry()
    first = get_registry()
    assert get_registry() is first
    reset_registry()
    assert get_registry() is not first


def test_plugin_registration_is_all_or_nothing():
    _require_testplugin()
    listing, _ = plugins_json(HF_COMPRESS_TESTPLUGIN_CLASH="1")
    # the plugin registered `step` before its `cubic` collided: neither stays
    assert "step" not in names_of(listing, "schedule")
    assert names_of(listing, "schedule")["cubic"]["distribution"] == "hf-compress"
    assert [b["entry_point"] for b in listing["broken"]] == ["testplugin"]


def test_replacing_a_builtin_on_purpose_is_logged():
    _require_testplugin()
    _, stderr = plugins_json(HF_COMPRESS_TESTPLUGIN_CLASH="replace")
    assert "schedule 'cubic' from hf-compress-testplugin" in stderr and "replaces the one from hf-compress" in stderr
