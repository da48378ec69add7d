"""The plugin bus: pluggy hookspecs from DESIGN.md, entry-point discovery, and typed registries.

Built-in packages register through the same `llmctl` entry-point group a third party uses. Each
`register_*` hook receives a `register(...)` callback; the bus records which plugin registered what, and a
duplicate name raises a PluginError naming both plugins.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import os
from typing import Any, Callable

import pluggy

from .errors import PluginError

PROJECT = "llmctl"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: An entry point whose module lives in the `llmctl.` namespace is one of llmctl's own packages: it always
#: loads (LLMCTL_LOAD_PLUGINS filters third parties only) and `llmctl plugins` lists it first.
BUILTIN_NAMESPACE = "llmctl."


def is_builtin(module_path: str) -> bool:
    return module_path.startswith(BUILTIN_NAMESPACE)


class Hookspecs:
    """Every hook takes one argument. Hooks other than register_commands get a `register` callback."""

    @hookspec
    def register_commands(self, cli):
        """Add click groups/commands to the `llmctl` group."""

    @hookspec
    def register_models(self, register):
        """register(name, family): a model family (e.g. "llama", "qwen2") and its HF adapter."""

    @hookspec
    def register_kernels(self, register):
        """register(op, backend, impl, priority=0, available=callable)."""

    @hookspec
    def register_readers(self, register):
        """register(format, reader): corpus readers by format (parquet, jsonl, json, csv, txt)."""

    @hookspec
    def register_templates(self, register):
        """register(name, template): chat/prompt templates."""

    @hookspec
    def register_filters(self, register):
        """register(name, filter): cleaning rules."""

    @hookspec
    def register_evaluators(self, register):
        """register(name, evaluator): benchmarks (mmlu, cmmlu, ceval, ppl, ...)."""

    @hookspec
    def register_loggers(self, register):
        """register(name, logger_factory): metric sinks (jsonl, tensorboard, wandb)."""

    @hookspec
    def register_datasets(self, register):
        """register(name, factory): training datasets ("gpt" blended pretraining, later "sft", "dpo").

        Added beyond DESIGN.md's list so the trainer in core reaches llmctl-data's datasets through the bus
        (core never imports another llmctl package)."""

    @hookspec
    def register_executors(self, register):
        """register(name, executor_class): where data stages run ("local" process pool, "ray" tasks)."""

    @hookspec
    def register_classifiers(self, register):
        """register(name, backend | "package.module"): data-quality classifier backends (fasttext, bert) that
        `llmctl data train-classifier` trains and `classify` loads; a backend is a module (or its dotted name)
        with `train(train, val, options, out_dir, quiet)` and `load(dir, meta, **runtime)`."""

    @hookspec
    def register_tasks(self, register):
        """register(name, TaskClass | "module:Class"): what the training driver trains (pretrain, sft, dpo)."""

    @hookspec
    def register_parallelisms(self, register):
        """register(name, ParallelismClass | "module:Class"): how a model is spread (single, ddp, fsdp2, ...)."""

    @hookspec
    def register_callbacks(self, register):
        """register(name, callback): an object with some of train.callbacks.Callback's hooks, called by
        every training run in the process (profilers, extra sinks, fault injection in tests)."""


REGISTRY_HOOKS = (
    "models", "kernels", "readers", "templates", "filters", "evaluators", "loggers", "datasets", "executors",
    "classifiers", "tasks", "parallelisms", "callbacks",
)


@dataclasses.dataclass
class Entry:
    name: str
    value: Any
    plugin: str
    extra: dict = dataclasses.field(default_factory=dict)


class PluginBus:
    """A pluggy manager plus the registries filled by calling each plugin's hooks one plugin at a time."""

    def __init__(self, load_entrypoints: bool = True):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(Hookspecs)
        self.dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self._registries: dict[str, dict[str, Entry]] = {}
        if load_entrypoints:
            self._load_entrypoints()

    # ---- discovery -------------------------------------------------------------------------------------
    def _load_entrypoints(self) -> None:
        allowed_env = os.environ.get("LLMCTL_LOAD_PLUGINS")
        allowed = None if allowed_env is None else {n.strip() for n in allowed_env.split(",") if n.strip()}
        for ep in md.entry_points(group=PROJECT):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            builtin = is_builtin(ep.value)
            if not builtin and allowed is not None and ep.name not in allowed:
                continue
            if self.pm.has_plugin(ep.name):
                continue  # same distribution installed twice on sys.path
            try:
                module = ep.load()
            except Exception as e:  # a broken third-party plugin must not take the CLI down silently
                raise PluginError(f"plugin '{ep.name}' from {dist} failed to load: {e}") from None
            self.register_plugin(module, ep.name, dist, version)

    def register_plugin(self, module: Any, name: str, dist: str = "?", version: str = "?") -> None:
        self.pm.register(module, name=name)
        self.dists[name] = (dist, version)
        self._registries.clear()

    # ---- registries ------------------------------------------------------------------------------------
    def registry(self, kind: str) -> dict[str, Entry]:
        """name -> Entry for one hook kind ("models", "evaluators", ...). Kernels key by "op/backend"."""
        if kind not in REGISTRY_HOOKS:
            raise KeyError(kind)
        if kind not in self._registries:
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: str) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        hook = getattr(self.pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():  # registration order (pluggy lists impls oldest first)
            plugin = impl.plugin_name

            def register(name: str, value: Any = None, *args: Any, _plugin: str = plugin,
                         replaces: str | None = None, **kw: Any) -> None:
                """`replaces="core"`: this registration knowingly supersedes plugin core's entry of the same
                name (whichever of the two registers first); any other clash is an error naming both."""
                key, extra = _entry_key(kind, name, value, args, kw)
                entry = Entry(key, extra.pop("value"), _plugin, {**extra, "replaces": replaces})
                old = entries.get(key)
                if old is not None and old.extra.get("replaces") == _plugin:
                    return  # the entry already there supersedes this plugin's
                if old is not None and replaces != old.plugin:
                    raise PluginError(
                        f"{kind[:-1]} '{key}' registered twice: by plugin '{old.plugin}' and by '{_plugin}'"
                    )
                entries[key] = entry

            impl.function(register)
        return entries

    def commands(self, cli) -> None:
        """Let every plugin add its commands; a clash of command names is an error naming both plugins."""
        owners: dict[str, str] = {}
        for impl in self.pm.hook.register_commands.get_hookimpls():
            before = set(cli.commands)
            shadow = dict(cli.commands)
            impl.function(cli)
            for name in set(cli.commands) - before:
                owners[name] = impl.plugin_name
            for name, cmd in shadow.items():
                if cli.commands.get(name) is not cmd:
                    raise PluginError(
                        f"command '{name}' registered twice: by plugin '{owners.get(name, '?')}' "
                        f"and by '{impl.plugin_name}'"
                    )
                owners.setdefault(name, impl.plugin_name)
        self.command_owners = owners

    def summary(self) -> list[dict[str, Any]]:
        """One row per plugin: name, distribution, version, and what it registered by kind."""
        rows = []
        owners = getattr(self, "command_owners", {})
        for name, _module in self.pm.list_name_plugin():
            dist, version = self.dists.get(name, ("?", "?"))
            registered: dict[str, list[str]] = {}
            cmds = sorted(c for c, p in owners.items() if p == name)
            if cmds:
                registered["commands"] = cmds
            for kind in REGISTRY_HOOKS:
                names = sorted(e.name for e in self.registry(kind).values() if e.plugin == name)
                if names:
                    registered[kind] = names
            module = getattr(_module, "__name__", "")
            rows.append({"plugin": name, "distribution": dist, "version": version, "builtin": is_builtin(module + "."),
                         "registered": registered})
        return sorted(rows, key=lambda r: (not r["builtin"], r["plugin"]))


def _parse_kernel(name: str, backend: Any, args: tuple, kw: dict) -> tuple[str, dict]:
    """register(op, backend, impl, priority=0, available=callable)"""
    impl = args[0] if args else kw.pop("impl")
    priority = args[1] if len(args) > 1 else kw.pop("priority", 0)
    available = args[2] if len(args) > 2 else kw.pop("available", None)
    if not callable(impl):
        raise PluginError(f"kernel '{name}/{backend}': impl is not callable")
    return f"{name}/{backend}", {"value": impl, "op": name, "backend": backend, "priority": priority,
                                  "available": available}


def _parse_model(name: str, spec: Any, args: tuple, kw: dict) -> tuple[str, dict]:
    """register(family, ModelSpec(family, hf=HFAdapter, mcore=layout, parallelize="module:fn"))"""
    if args or kw or not hasattr(spec, "hf") or getattr(spec, "family", None) != name:
        raise PluginError(f"model '{name}': register(family, ModelSpec(family, hf=...)) expected, got {spec!r}")
    return name, {"value": spec}


def _parse_named(name: str, value: Any, args: tuple, kw: dict) -> tuple[str, dict]:
    """register(name, value, **extra)"""
    if args:
        raise PluginError(f"'{name}': register(name, value, **extra) takes no further positional arguments")
    return name, {"value": value, **kw}


#: Each registry parses its own register(...) arguments.
_PARSERS = {"kernels": _parse_kernel, "models": _parse_model}


def _entry_key(kind: str, name: str, value: Any, args: tuple, kw: dict) -> tuple[str, dict]:
    if not isinstance(name, str) or not name:
        raise PluginError(f"{kind}: registered name must be a non-empty string, got {name!r}")
    return _PARSERS.get(kind, _parse_named)(name, value, args, kw)


_BUS: PluginBus | None = None


def get_bus(reload: bool = False) -> PluginBus:
    """The process-wide plugin bus (entry points are scanned once)."""
    global _BUS
    if _BUS is None or reload:
        _BUS = PluginBus()
    return _BUS


def lookup(kind: str, name: str) -> Any:
    """The registered value for `name`, or a UserError listing what is available. A value registered as
    "package.module:attr" (how torch-side classes register from a torch-free plugin module) is imported now;
    a failing import is a PluginError naming the plugin, never a silent fall-back."""
    from .errors import UserError
    from .config import did_you_mean

    reg = get_bus().registry(kind)
    if name not in reg:
        raise UserError(f"unknown {kind[:-1]} '{name}'{did_you_mean(name, reg)}; available: {', '.join(sorted(reg))}")
    value = reg[name].value
    if isinstance(value, str) and ":" in value:
        module, _, attr = value.partition(":")
        try:
            value = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise PluginError(f"{kind[:-1]} '{name}' from plugin '{reg[name].plugin}': cannot load {reg[name].value} "
                              f"({e})") from None
    return value


Register = Callable[..., None]
