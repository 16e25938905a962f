"""LLVM (through llvmlite) as the optimizing tier's code generator.

IR text in, a relocatable x86-64 object out, for codecache.py to link:
guest registers promoted (SROA), instcombine, CFG simplification, then
codegen -O2, for the regions that run long (translator.py).  Measured here
(llvmlite 0.50, LLVM 22 with assertions on): ~1-1.6 ms per guest
instruction, which is why the baseline tier is copy-and-patch
(stencils.py), not LLVM.

Each Backend has its own LLVM context and target machine, so the compile
thread never shares LLVM state with numba in the main thread; llvmlite
releases the GIL while LLVM works (measured in shared/design/JIT.md B2).
"""

import llvmlite.binding as llvm


class BackendError(Exception):
    """LLVM refused the IR (a translator bug: the region stays interpreted)."""


class Backend:
    def __init__(self):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        self.machine = target.create_target_machine(cpu=cpu, features=features, opt=2,
                                                    reloc="pic", codemodel="small")
        self.context = llvm.create_context()
        self.triple = self.machine.triple
        self.layout = str(self.machine.target_data)

    def compile(self, ir_text: str) -> bytes:
        tm = self.machine
        try:
            mod = llvm.parse_assembly(ir_text, context=self.context)
            mod.triple = self.triple
            mod.data_layout = self.layout
            mod.verify()
        except RuntimeError as e:
            raise BackendError(str(e)) from None
        fpm = llvm.create_new_function_pass_manager()
        fpm.add_sroa_pass()
        fpm.add_instruction_combine_pass()
        fpm.add_simplify_cfg_pass()
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
        for fn in mod.functions:
            if not fn.is_declaration:
                fpm.run(fn, pb)
        return tm.emit_object(mod)
