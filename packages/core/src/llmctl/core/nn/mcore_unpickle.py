"""Which pickled globals a Megatron / MindSpeed `model_optim_rng.pt` may name, and what they become.

A training save pickles more than tensors: `args` is an `argparse.Namespace` (the one real class allowed,
because the model's shape is read from it), Megatron stores enums in it (`args.model_type` from `get_model`,
`args.attention_backend`, `args.exit_signal`), and `rng_state` holds numpy's RNG state tuple
(`np.random.get_state()`: an ndarray, rebuilt through `numpy._core.multiarray._reconstruct`) or numpy
generator objects; newer versions add the rerun state machine's state. The names are those megatron-core's
own `safe_globals.SAFE_GLOBALS` lists, plus numpy 1.x/2.x spellings. llmctl needs none of these values, so
each name is mapped to an *inert stand-in*: a class of ours that takes any arguments and any state and keeps
none of it. `torch.load(weights_only=True)` then reads the file without calling numpy, megatron or anything
else the file names; a global outside this list is still refused.

Other libraries register their own safe globals process-wide (importing megatron.core allowlists the real
numpy `_reconstruct`); `only_allowed_globals()` sets aside that registry for the duration of one load, so
what a file may name does not depend on what the process imported.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any, Iterator

#: Globals a Megatron/MindSpeed training save names outside `model` (numpy 1.x and 2.x spellings).
STANDIN_GLOBALS = (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor", "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
    "numpy.random._pcg64.PCG64DXSM", "numpy.random._philox.Philox", "numpy.random._sfc64.SFC64",
    "numpy.random.bit_generator.SeedSequence", "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.dtypes.UInt32DType",
    "megatron.core.enums.ModelType", "megatron.model.enums.ModelType",
    "megatron.core.transformer.enums.AttnBackend", "megatron.core.transformer.enums.CudaGraphScope",
    "megatron.core.optimizer.OptimizerConfig", "megatron.core.optimizer.optimizer_config.OptimizerConfig",
    "megatron.core.rerun_state_machine.RerunDiagnostic", "megatron.core.rerun_state_machine.RerunMode",
    "megatron.core.rerun_state_machine.RerunState",
    "types.SimpleNamespace", "pathlib.PosixPath", "pathlib._local.PosixPath", "io.BytesIO", "_io.BytesIO",
    "signal.Signals",
)


class Placeholder:
    """What a stand-in global unpickles to: its name only. Arguments and pickled state are dropped."""

    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<placeholder for {self.name}>"


def _standin(name: str) -> type[Placeholder]:
    # One class per name: the unpickler applies BUILD only to instances of an allowlisted class.
    return type(f"Placeholder[{name}]", (Placeholder,), {"name": name, "__slots__": ()})


_STANDINS = [(_standin(name), name) for name in STANDIN_GLOBALS]


def allowed_globals() -> list[Any]:
    """argparse.Namespace plus the inert stand-ins, as `torch.serialization.safe_globals` takes them."""
    return [argparse.Namespace, *_STANDINS]


@contextlib.contextmanager
def only_allowed_globals() -> Iterator[None]:
    """Within: exactly `allowed_globals()` are allowlisted for weights_only loads; the process's registry
    is put back afterwards."""
    from torch import serialization

    saved = serialization.get_safe_globals()
    serialization.clear_safe_globals()
    try:
        serialization.add_safe_globals(allowed_globals())
        yield
    finally:
        serialization.clear_safe_globals()
        serialization.add_safe_globals(saved)
