"""llmctl-parallel's built-in plugin (registered through the `llmctl` entry point). Torch-free: strategies
register as "module:Class" strings and are imported when a run looks them up."""

from llmctl.core.plugins import hookimpl


@hookimpl
def register_parallelisms(register):
    register("ddp", "llmctl.parallel.data_parallel:DataParallel", replaces="core")  # core's ddp + mesh/ZeRO-1/hooks
    register("fsdp2", "llmctl.parallel.model_parallel:FSDP2Strategy")  # fsdp.FSDP2, or with tp/pp/cp ModelParallel
    register("model_parallel", "llmctl.parallel.model_parallel:ModelParallel")  # tp/pp/cp from the layout keys
    register("tp", "llmctl.parallel.model_parallel:ModelParallel")
    register("pp", "llmctl.parallel.model_parallel:ModelParallel")
    register("cp", "llmctl.parallel.model_parallel:ModelParallel")
