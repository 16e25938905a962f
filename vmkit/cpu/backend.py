"""LLVM (through llvmlite) as the translator's code generator, at two levels.

IR text in, a relocatable x86-64 object out, for codecache.py to link.

- Tier 1 (baseline): no IR passes and LLVM's fast instruction selector
  (codegen -O0).  Measured here on guest loops: ~80 us per guest
  instruction to compile, against ~550-900 us for any codegen level above
  it (LLVM 22 in the llvmlite wheel has assertions on): the only level
  cheap enough to translate everything warm.
- Tier 2 (optimizing): registers promoted (SROA), instcombine, CFG
  simplification, then codegen -O2, for regions that are entered
  often (translator.py, TIER2_CALLS).

Each Backend has its own LLVM context and target machines, so the compile
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
        self.machines = {tier: target.create_target_machine(cpu=cpu, features=features, opt=opt,
                                                            reloc="pic", codemodel="small")
                         for tier, opt in ((1, 0), (2, 2))}
        self.context = llvm.create_context()
        self.triple = self.machines[1].triple
        self.layout = str(self.machines[1].target_data)

    def compile(self, ir_text: str, tier: int) -> bytes:
        tm = self.machines[tier]
        try:
            mod = llvm.parse_assembly(ir_text, context=self.context)
            mod.triple = self.triple
            mod.data_layout = self.layout
            mod.verify()
        except RuntimeError as e:
            raise BackendError(str(e)) from None
        if tier == 2:
            fpm = llvm.create_new_function_pass_manager()
            fpm.add_sroa_pass()
            fpm.add_instruction_combine_pass()
            fpm.add_simplify_cfg_pass()
            pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
            for fn in mod.functions:
                if not fn.is_declaration:
                    fpm.run(fn, pb)
        return tm.emit_object(mod)
