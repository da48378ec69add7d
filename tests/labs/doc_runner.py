"""The docs as the single source of the labs' commands: fenced blocks read from the markdown, toy ones run in
order by bash in a fresh folder, real-scale ones checked against the CLI they name.

A block's info string says what it is:
    ```bash toy     run at toy scale by tests/labs/test_labs_docs.py (in order, one bash, one folder)
    ```bash real    the real-scale form (8 NPUs/GPUs, the lab's paths): every llmctl command in it must parse
                    (its command exists, each --flag is one of that command's options) and must also be run,
                    as the same sub-command, by a toy block of the same doc
    ```text tree    a file tree a toy run must leave: every path in it is checked after the run
    anything else   illustration (pasted output, YAML shown, handout scripts)
The toy script gets $FIXTURES (the real-data fixtures folder) from the test; every other path is a variable
the doc itself defines, so a reader can paste the same blocks.
(A uniquely named module: `from conftest import` is ambiguous across test folders.)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
LABS = DOCS / "labs"
FENCE = re.compile(r"^```([\w+-]*)[ \t]*([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclasses.dataclass
class Block:
    doc: Path
    line: int
    lang: str
    tag: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    return [Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), m.group(3))
            for m in FENCE.finditer(text)]


def toy_blocks(doc: Path) -> list[Block]:
    return [b for b in blocks(doc) if b.lang == "bash" and b.tag == "toy"]


# ---- running the toy blocks --------------------------------------------------------------------------------
def toy_script(docs: list[Path]) -> str:
    """One bash script of every toy block of `docs`, in order, each announced by a marker line."""
    parts = ["set -euo pipefail"]
    for doc in docs:
        for b in toy_blocks(doc):
            parts += [f"echo '>>> block {b.where}'", b.text.rstrip("\n")]
    return "\n".join(parts) + "\n"


def run_toy(docs: list[Path], cwd: Path, fixtures: Path, timeout: float) -> str:
    """Run the docs' toy blocks with bash in `cwd`; the whole output, or AssertionError naming the block that
    failed with the output's tail. A run past `timeout` is killed with its whole process group (torchrun and
    its workers too)."""
    script = cwd / "toy.sh"
    script.write_text(toy_script(docs), encoding="utf-8")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "FIXTURES": str(fixtures), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           # a shared 2-core box: one thread per process is several times faster than threads that contend
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONUNBUFFERED": "1"}
    env.pop("LLMCTL_PROGRESS", None)
    proc = subprocess.Popen(["bash", str(script)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"toy run timed out after {timeout:.0f}s in {_last_block(out)}:\n{out[-4000:]}")
    (cwd / "toy.out").write_text(out, encoding="utf-8")
    if proc.returncode != 0:
        raise AssertionError(f"toy run failed (exit {proc.returncode}) in {_last_block(out)}:\n{out[-6000:]}")
    return out


def _last_block(out: str) -> str:
    marks = [line[len(">>> block "):] for line in out.splitlines() if line.startswith(">>> block ")]
    return marks[-1] if marks else "the first block"


# ---- file trees ----------------------------------------------------------------------------------------------
TREE_LINE = re.compile(r"^((?:│   |    )*)(?:├── |└── )(.+?)\s*(?:#.*)?$")


def tree_paths(block: Block) -> list[str]:
    """The paths a ```text tree block lists (its first line is the root, relative to the toy folder)."""
    lines = [ln for ln in block.text.splitlines() if ln.strip()]
    root = lines[0].split("#")[0].strip().rstrip("/")
    stack: list[str] = []
    paths = []
    for line in lines[1:]:
        m = TREE_LINE.match(line)
        if not m:
            raise AssertionError(f"{block.where}: not a tree line: {line!r}")
        depth = len(m.group(1)) // 4
        name = m.group(2).strip().rstrip("/")
        if name in ("…", "..."):
            continue
        stack[depth:] = [name]
        paths.append("/".join([root, *stack]))
    return paths


def missing_tree_paths(docs: list[Path], cwd: Path) -> list[str]:
    return [f"{b.where}: {p}" for doc in docs for b in blocks(doc) if b.lang == "text" and b.tag == "tree"
            for p in tree_paths(b) if not (cwd / p).exists()]


# ---- real-scale blocks: the commands must parse ----------------------------------------------------------------
def commands(block: Block) -> list[list[str]]:
    """Each llmctl invocation in a bash block, as argv after `llmctl` (line continuations joined; leading
    VAR=value assignments and a torchrun launcher in front of `-m llmctl.cli` dropped)."""
    text = re.sub(r"\\\n", " ", block.text)
    out = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            try:
                argv = shlex.split(part)
            except ValueError as e:
                raise AssertionError(f"{block.where}: cannot split {part!r}: {e}") from None
            while argv and ENV_ASSIGN.match(argv[0]):
                argv = argv[1:]
            if argv[:1] == ["torchrun"] and "llmctl.cli" in argv:
                argv = ["llmctl", *argv[argv.index("llmctl.cli") + 1:]]
            if argv[:1] == ["llmctl"]:
                out.append(argv[1:])
    return out


def resolve(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """(command path, the click command, the remaining args) for an llmctl argv."""
    from llmctl.cli.main import build_cli

    cmd: click.Command = build_cli()
    path: list[str] = []
    rest = list(argv)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), rest[0])
        if sub is None:
            break
        path.append(rest.pop(0))
        cmd = sub
    return path, cmd, rest


def lint(block: Block, argv: list[str]) -> list[str]:
    """What is wrong with one llmctl invocation: an unknown command or --flag."""
    path, cmd, rest = resolve(argv)
    if not path:
        return [f"{block.where}: `llmctl {argv[0] if argv else ''}`: no such command"]
    if isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        return [f"{block.where}: `llmctl {' '.join([*path, rest[0]])}`: no such command"]
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    problems = []
    for arg in rest:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if flag not in known:
                problems.append(f"{block.where}: `llmctl {' '.join(path)}` has no option {flag}")
    return problems


#: Commands whose `--set KEY=VALUE` keys are training-config keys (checked against TrainConfig's sections).
TRAIN_CONFIG_COMMANDS = {("pretrain",), ("finetune",), ("bench", "throughput"), ("scaling", "plan")}


def config_key_problems(block: Block, argv: list[str]) -> list[str]:
    """`--set a.b=c` keys that name no field of the training config (plugin-owned sections, `task:` and
    `parallel:`, are free-form and not checked here)."""
    import dataclasses as dc

    from llmctl.core.train.config import TrainConfig

    path, _, rest = resolve(argv)
    if tuple(path) not in TRAIN_CONFIG_COMMANDS:
        return []
    sections = {f.name: f for f in dc.fields(TrainConfig)}
    problems = []
    for flag, value in zip(rest, rest[1:]):
        if flag != "--set":
            continue
        key = value.split("=", 1)[0]
        section, _, field = key.partition(".")
        if section in ("task", "parallel") or key == "model.preset":
            continue
        f = sections.get(section)
        cls = f.default_factory if f is not None and f.default_factory is not dc.MISSING else None
        if cls is None or not dc.is_dataclass(cls) or field.split(".")[0] not in {x.name for x in dc.fields(cls)}:
            problems.append(f"{block.where}: `llmctl {' '.join(path)} --set {key}=...`: no such config key")
    return problems
