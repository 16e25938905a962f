"""LLVM (through llvmlite) as the translator's code generator.

IR text in, a relocatable x86-64 object out, for codecache.py to link.
Each Backend has its own LLVM context and target machine, so the compile
thread never shares LLVM state with numba in the main thread; llvmlite
releases the GIL while LLVM works (measured in shared/design/JIT.md B2).
"""

import llvmlite.binding as llvm

DEFAULT_OPT = 1   # -O1: as fast as -O2 on guest regions, cheaper (JIT.md B-exec)


class BackendError(Exception):
    """LLVM refused the IR (a translator bug: the region stays interpreted)."""


class Backend:
    def __init__(self, opt: int = DEFAULT_OPT):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        self.opt = opt
        self.tm = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
            opt=opt, reloc="pic", codemodel="small")
        self.context = llvm.create_context()
        self.triple = self.tm.triple
        self.layout = str(self.tm.target_data)

    def compile(self, ir_text: str) -> bytes:
        try:
            mod = llvm.parse_assembly(ir_text, context=self.context)
            mod.triple = self.triple
            mod.data_layout = self.layout
            mod.verify()
        except RuntimeError as e:
            raise BackendError(str(e)) from None
        if self.opt:
            pto = llvm.create_pipeline_tuning_options(speed_level=self.opt)
            pb = llvm.create_pass_builder(self.tm, pto)
            pb.getModulePassManager().run(mod, pb)
        return self.tm.emit_object(mod)
