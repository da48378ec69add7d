"""Which optional dependencies are installed, found without importing them (torch-free, fast), so a long
command can refuse to start with one line naming what to install, and `llmctl doctor` can say what a user has.

Torch is the user's own build (DESIGN), so it is optional here like matplotlib or tensorboard.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

# The llmctl distributions, in the order doctor lists them.
LLMCTL_DISTS = ("llmctl-core", "llmctl-cli", "llmctl-data", "llmctl-eval", "llmctl-finetune", "llmctl-parallel",
                "llmctl-scaling")


@dataclass(frozen=True)
class Dep:
    """An optional third-party dependency: import name, distribution, what brings it, what needs it."""

    module: str
    distribution: str
    install: str  # a pip requirement: an llmctl-core extra where one exists
    needed_for: str


OPTIONAL: dict[str, Dep] = {o.module: o for o in (
    Dep("torch", "torch", "llmctl-core[torch]", "pretrain, generate, convert, eval, quickstart"),
    Dep("safetensors", "safetensors", "llmctl-core[torch]", "HF export and import"),
    Dep("transformers", "transformers", "llmctl-core[torch]", "HF tokenizers and models, tokenizer training"),
    Dep("tokenizers", "tokenizers", "llmctl-core[torch]", "fast tokenizers, tokenizer training"),
    Dep("sentencepiece", "sentencepiece", "llmctl-core[torch]", "sentencepiece tokenizers"),
    Dep("matplotlib", "matplotlib", "llmctl-core[plot]", "llmctl plot, quickstart"),
    Dep("tensorboard", "tensorboard", "llmctl-core[tensorboard]", "the tensorboard logging sink"),
    Dep("wandb", "wandb", "llmctl-core[wandb]", "the wandb logging sink"),
    Dep("ray", "ray", "llmctl-data[ray]", "data stages on a Ray cluster"),
    Dep("fasttext", "fasttext-numpy2", "llmctl-data[fasttext]", "fastText quality/domain classifiers"),
    Dep("peft", "peft", "peft", "LoRA adapters in PEFT layout"),
)}


def is_installed(module: str) -> bool:
    """True when `module` can be imported from sys.path; nothing is imported (cheap even for torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_of(distribution: str) -> str | None:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


def missing(modules: Iterable[str]) -> list[str]:
    """The names in `modules` (keys of OPTIONAL) that are not installed, in the order given."""
    return [m for m in modules if not is_installed(m)]


def install_command(names: Iterable[str]) -> str:
    """One pip command that installs `names` (OPTIONAL modules or llmctl distributions), each distribution's
    extras merged into one requirement, e.g. `pip install 'llmctl-core[plot,torch]' llmctl-eval`."""
    extras: dict[str, set[str]] = {}  # distribution -> extras, in first-seen order
    for name in names:
        dist, _, rest = (OPTIONAL[name].install if name in OPTIONAL else name).partition("[")
        extras.setdefault(dist, set()).update(e for e in rest.rstrip("]").split(",") if e)
    reqs = [f"'{d}[{','.join(sorted(x))}]'" if x else d for d, x in extras.items()]
    return "pip install " + " ".join(reqs)


def needs_line(what: str, names: list[str]) -> str:
    """`WHAT needs a, b (not installed): pip install …` — the one line a command exits 2 with."""
    line = f"{what} needs {', '.join(names)} (not installed): {install_command(names)}"
    if "torch" in names:
        line += " (or your own torch build: CPU, CUDA, or the version torch-npu pins)"
    return line


def require(what: str, modules: Iterable[str] = (), distributions: Iterable[str] = ()) -> None:
    """Raise one UserError naming every missing module and llmctl distribution, before any work starts."""
    names = missing(modules) + [d for d in distributions if version_of(d) is None]
    if names:
        raise UserError(needs_line(what, names))


# ---- Ascend: CANN and the driver, read from their install files (no torch_npu import) ----------------------
#: Where CANN's set_env.sh points (ASCEND_TOOLKIT_HOME / ASCEND_HOME_PATH), else the default install path.
CANN_HOME_VARS = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
CANN_DEFAULT_HOME = "/usr/local/Ascend/ascend-toolkit/latest"
#: Files that state the toolkit's version, in the order CANN releases have used them.
CANN_VERSION_FILES = ("compiler/version.info", "runtime/version.info", "version.cfg")
DRIVER_VERSION_FILE = "/usr/local/Ascend/driver/version.info"


def _version_in(path: Path) -> str | None:
    """`Version=8.0.RC3` (or `version=...`) from a CANN/driver key=value info file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "version" and value.strip():
            return value.strip()
    return None


def cann_info() -> dict[str, Any]:
    """The CANN toolkit this process would use: its home (and which variable named it), version, and the
    Ascend driver's version. torch_npu must match the CANN version, which is why doctor prints both."""
    var = next((v for v in CANN_HOME_VARS if os.environ.get(v)), None)
    home = Path(os.environ[var]) if var else Path(CANN_DEFAULT_HOME)
    version = next((v for f in CANN_VERSION_FILES if (v := _version_in(home / f))), None)
    if version is None:
        version = next((v for f in sorted(home.glob("*/ascend_toolkit_install.info")) if (v := _version_in(f))),
                       None)
    return {"home": str(home), "from": f"${var}" if var else "default path", "found": home.is_dir(),
            "version": version, "driver": _version_in(Path(DRIVER_VERSION_FILE)),
            "torch_npu": version_of("torch-npu") or version_of("torch_npu")}


def format_cann(info: dict[str, Any]) -> list[str]:
    if info["found"]:
        cann = f"{info['version'] or 'version unknown'} at {info['home']} ({info['from']})"
    else:
        cann = f"not found at {info['home']} ({info['from']}; source CANN's set_env.sh first)"
    return [f"  {'torch-npu':<16} {info['torch_npu'] or 'not installed  (Ascend NPUs: docs/ascend.md)'}",
            f"  {'CANN':<16} {cann}",
            f"  {'ascend-driver':<16} {info['driver'] or 'not found'}"]


# ---- the report `llmctl doctor` prints ---------------------------------------------------------------------
def torch_build() -> dict[str, Any]:
    """torch's version and what it can run on. Imports torch (call only when a report is wanted)."""
    try:
        import torch

        from .nn import device
    except Exception as e:  # an installed but broken torch is exactly what a bug report needs to show
        return {"import_error": f"{type(e).__name__}: {e}".splitlines()[0]}
    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "hip_build": getattr(torch.version, "hip", None),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "npu_available": device.npu_available(),
        "llmctl_device": device.device_type(),
    }
    if info["cuda_devices"]:
        info["cuda_device_name"] = torch.cuda.get_device_name(0)
    if info["npu_available"]:
        info["npu_devices"] = torch.npu.device_count()
        info["npu_device_name"] = torch.npu.get_device_name(0)
    return info


def report(with_torch_build: bool = True) -> dict[str, Any]:
    """Python, the llmctl distributions and every OPTIONAL dependency (installed, version, how to install)."""
    optional = []
    for opt in OPTIONAL.values():
        row: dict[str, Any] = {"name": opt.module, "installed": is_installed(opt.module),
                               "version": version_of(opt.distribution), "needed_for": opt.needed_for,
                               "install": install_command([opt.module])}
        if opt.module == "torch" and row["installed"] and with_torch_build:
            row["build"] = torch_build()
        optional.append(row)
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "llmctl": {d: version_of(d) for d in LLMCTL_DISTS},
        "optional": optional,
        "ascend": cann_info(),
    }


def format_torch_build(build: dict[str, Any]) -> str:
    if "import_error" in build:
        return f"fails to import: {build['import_error']}"
    cuda = f"CUDA {build['cuda_build']} build" if build["cuda_build"] else "no CUDA build"
    if build.get("hip_build"):
        cuda += f", ROCm {build['hip_build']}"
    avail = f"cuda available: {'yes' if build['cuda_available'] else 'no'}"
    if build["cuda_devices"]:
        avail += f" ({build['cuda_devices']} × {build.get('cuda_device_name', '?')})"
    npu = f"npu available: {'yes' if build['npu_available'] else 'no'}"
    if build.get("npu_devices"):
        npu += f" ({build['npu_devices']} × {build.get('npu_device_name', '?')})"
    return f"{cuda}; {avail}; {npu}; llmctl picks: {build['llmctl_device']}"


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"python {rep['python']} ({rep['executable']}) on {rep['platform']}", "llmctl:"]
    for dist, ver in rep["llmctl"].items():
        lines.append(f"  {dist:<16} {ver or 'not installed'}")
    lines.append("optional dependencies:")
    for row in rep["optional"]:
        if row["installed"]:
            text = row["version"] or "installed (version unknown)"
            if "build" in row:
                text += "  " + format_torch_build(row["build"])
        else:
            text = f"not installed  (for {row['needed_for']}: {row['install']})"
        lines.append(f"  {row['name']:<16} {text}")
    if "ascend" in rep:
        lines.append("ascend:")
        lines += format_cann(rep["ascend"])
    return "\n".join(lines)
