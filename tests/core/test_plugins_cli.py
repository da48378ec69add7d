"""Plugin bus and CLI: duplicates name both plugins, a real third-party distribution is discovered through the
`llmctl` entry-point group (and LLMCTL_LOAD_PLUGINS restricts it), strict configs, `llmctl plugins`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest
from llmctl.core import plugins
from llmctl.core.config import apply_overrides, from_dict
from llmctl.core.errors import PluginError, UserError
from llmctl.core.model_config import ModelConfig
from llmctl.core.model_spec import ModelSpec
from llmctl.core.nn.hf_adapters import ADAPTERS
from plugin_sites import install_plugins


def _plugin(**hooks):
    return types.SimpleNamespace(**{name: plugins.hookimpl(fn) for name, fn in hooks.items()})


def test_duplicate_registration_raises_naming_both_plugins():
    bus = plugins.PluginBus(load_entrypoints=False)
    spec = ModelSpec("llama", hf=ADAPTERS["llama"])
    bus.register_plugin(_plugin(register_models=lambda register: register("llama", spec)), "alpha")
    bus.register_plugin(_plugin(register_models=lambda register: register("llama", spec)), "beta")
    with pytest.raises(PluginError, match="model 'llama' registered twice: by plugin 'alpha' and by 'beta'"):
        bus.registry("models")


@pytest.mark.parametrize("order", [("core", "parallel"), ("parallel", "core")])
def test_a_registration_may_replace_a_named_plugins_entry(order):
    hooks = {"core": lambda register: register("ddp", "core:DDP"),
             "parallel": lambda register: register("ddp", "parallel:DDP", replaces="core")}
    bus = plugins.PluginBus(load_entrypoints=False)
    for name in order:
        bus.register_plugin(_plugin(register_parallelisms=hooks[name]), name)
    assert bus.registry("parallelisms")["ddp"].value == "parallel:DDP"  # whichever registered first
    bus.register_plugin(_plugin(register_parallelisms=lambda register: register("ddp", "x:DDP")), "third")
    with pytest.raises(PluginError, match="parallelism 'ddp' registered twice"):
        bus.registry("parallelisms")


def test_each_registry_parses_its_own_arguments():
    bus = plugins.PluginBus(load_entrypoints=False)
    bus.register_plugin(_plugin(register_models=lambda register: register("llama", "llama")), "old-style")
    with pytest.raises(PluginError, match=r"model 'llama': register\(family, ModelSpec"):
        bus.registry("models")
    bus = plugins.PluginBus(load_entrypoints=False)
    bus.register_plugin(_plugin(register_kernels=lambda register: register("rms_norm", "mine", "not callable")), "k")
    with pytest.raises(PluginError, match="kernel 'rms_norm/mine': impl is not callable"):
        bus.registry("kernels")


def test_duplicate_command_raises_naming_both_plugins():
    def adder(cli):
        cli.add_command(click.Command("hello", callback=lambda: None))

    bus = plugins.PluginBus(load_entrypoints=False)
    bus.register_plugin(_plugin(register_commands=lambda cli: adder(cli)), "first")
    bus.register_plugin(_plugin(register_commands=lambda cli: adder(cli)), "second")
    with pytest.raises(
        PluginError, match="command 'hello' registered twice: by plugin 'first' and by 'second'"
    ):
        bus.commands(click.Group("llmctl"))


def test_lookup_unknown_name_lists_available():
    with pytest.raises(
        UserError, match=r"unknown model 'lama' \(did you mean 'llama'\?\); available: llama, qwen2"
    ):
        plugins.lookup("models", "lama")


def test_plugins_command_lists_builtins(cli):
    code, out, err = cli("plugins")
    assert code == 0, err
    lines = out.splitlines()
    at = lines.index("core  (llmctl-core 0.1.0)")
    assert any(
        line.startswith("    commands: ") and "generate" in line and "convert" in line
        for line in lines[at : at + 3]
    )
    assert "    models: llama, qwen2" in lines
    code, out, err = cli("plugins", "--json")
    rows = {r["plugin"]: r for r in json.loads(out)}
    core = rows["core"]["registered"]
    assert {"convert", "generate", "plugins"} <= set(core["commands"])
    assert set(core["models"]) == {"llama", "qwen2"}
    assert {"attention/sdpa", "attention/reference", "cross_entropy/chunked"} <= set(core["kernels"])


# ---- config strictness --------------------------------------------------------------------------------
@dataclasses.dataclass
class _Train:
    lr: float = 1e-3
    steps: int = 10
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


def test_config_unknown_key_type_error_and_overrides():
    with pytest.raises(
        UserError, match=r"unknown config key 'model.num_layer' \(did you mean 'num_layers'\?\)"
    ):
        from_dict(_Train, {"model": {"num_layer": 2}})
    with pytest.raises(UserError, match="config key 'steps': cannot read 'ten' as int"):
        from_dict(_Train, {"steps": "ten"})
    with pytest.raises(UserError, match="config key 'steps': cannot read 2.5 as int"):
        from_dict(_Train, {"steps": 2.5})
    with pytest.raises(UserError, match="config key 'model' must be a mapping"):
        from_dict(_Train, {"model": 3})
    with pytest.raises(UserError, match="not divisible by num_heads"):
        from_dict(_Train, {"model": {"hidden_size": 100, "num_heads": 16}})
    cfg = from_dict(
        _Train,
        apply_overrides(
            {"model": {"num_layers": 2}}, ["steps=5", "model.hidden_size=64", "model.num_heads=4", "lr=3e-4"]
        ),
    )
    assert (cfg.steps, cfg.lr, cfg.model.hidden_size, cfg.model.num_layers) == (5, 3e-4, 64, 2)


# ---- a real third-party distribution ------------------------------------------------------------------
@pytest.fixture(scope="module")
def hello_site(tmp_path_factory) -> Path:
    return install_plugins(["llmctl_hello"], tmp_path_factory.mktemp("hello"))


def _run_llmctl(site: Path, *args: str, env: dict | None = None):
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    full_env.pop("LLMCTL_LOAD_PLUGINS", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "llmctl.cli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_third_party_plugin_adds_a_command(hello_site):
    res = _run_llmctl(hello_site, "--help")
    assert res.returncode == 0, res.stderr
    assert "hello" in res.stdout.split("Commands:")[1]
    res = _run_llmctl(hello_site, "hello", "--name", "tests")
    assert res.returncode == 0 and res.stdout.strip() == "hello, tests, from a third-party plugin", res.stderr
    res = _run_llmctl(hello_site, "plugins")
    assert "hello  (llmctl-hello 0.0.1)" in res.stdout and "templates: hello" in res.stdout


@pytest.mark.parametrize(
    "allowed,loaded", [(None, True), ("hello", True), ("", False), ("other,names", False)]
)
def test_load_plugins_env_restricts_third_party(hello_site, monkeypatch, allowed, loaded):
    monkeypatch.syspath_prepend(str(hello_site))
    if allowed is None:
        monkeypatch.delenv("LLMCTL_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("LLMCTL_LOAD_PLUGINS", allowed)
    bus = plugins.PluginBus()
    names = {name for name, _ in bus.pm.list_name_plugin()}
    assert ("hello" in names) == loaded
    assert "core" in names  # built-ins always load
    group = click.Group("llmctl")
    bus.commands(group)
    assert ("hello" in group.commands) == loaded and "generate" in group.commands


def test_load_plugins_env_in_a_real_process(hello_site):
    res = _run_llmctl(hello_site, "hello", env={"LLMCTL_LOAD_PLUGINS": ""})
    assert res.returncode == 2 and "No such command 'hello'" in res.stderr
