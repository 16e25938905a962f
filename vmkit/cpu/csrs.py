"""CSR numbers, trap causes and status-register fields.

RISC-V Privileged ISA 1.12: 2.2 (CSR listing), 3.1.6 (mstatus), 3.1.9 (mip/mie),
3.1.15 (mcause values).  One table for each fact; the core indexes its `csr`
array directly by CSR number, so these are both names and indices.
"""

# --- unprivileged floating-point and counters (ISA vol. I, 11.2, 12) -------
FFLAGS = 0x001
FRM = 0x002
FCSR = 0x003
CYCLE = 0xC00
TIME = 0xC01
INSTRET = 0xC02
HPMCOUNTER3 = 0xC03
HPMCOUNTER31 = 0xC1F

# --- supervisor ----------------------------------------------------------------
SSTATUS = 0x100
SIE = 0x104
STVEC = 0x105
SCOUNTEREN = 0x106
SENVCFG = 0x10A
SSCRATCH = 0x140
SEPC = 0x141
SCAUSE = 0x142
STVAL = 0x143
SIP = 0x144
STIMECMP = 0x14D
SATP = 0x180

# --- machine -----------------------------------------------------------------------
MVENDORID = 0xF11
MARCHID = 0xF12
MIMPID = 0xF13
MHARTID = 0xF14
MCONFIGPTR = 0xF15
MSTATUS = 0x300
MISA = 0x301
MEDELEG = 0x302
MIDELEG = 0x303
MIE = 0x304
MTVEC = 0x305
MCOUNTEREN = 0x306
MENVCFG = 0x30A
MCOUNTINHIBIT = 0x320
MHPMEVENT3 = 0x323
MHPMEVENT31 = 0x33F
MSCRATCH = 0x340
MEPC = 0x341
MCAUSE = 0x342
MTVAL = 0x343
MIP = 0x344
MTINST = 0x34A
MTVAL2 = 0x34B
PMPCFG0 = 0x3A0
PMPCFG15 = 0x3AF
PMPADDR0 = 0x3B0
PMPADDR63 = 0x3EF
MCYCLE = 0xB00
MINSTRET = 0xB02
MHPMCOUNTER3 = 0xB03
MHPMCOUNTER31 = 0xB1F
TSELECT = 0x7A0
TDATA1 = 0x7A1
TDATA2 = 0x7A2
TDATA3 = 0x7A3

# Decoded PMP entries, kept by the core in CSR slots that no guest can reach
# (0x800-0x83F are custom read/write numbers vmkit does not implement, so an
# access to them is an illegal instruction): lo[i], hi[i] (exclusive), cfg[i].
PMP_LO = 0x800
PMP_HI = 0x810
PMP_CFG = 0x820
PMP_ACTIVE = 0x830      # number of entries with A != OFF
PMP_LOCKED = 0x831      # 1 when any entry has L set

# --- mstatus fields (3.1.6) ----------------------------------------------------------
MSTATUS_SIE = 1 << 1
MSTATUS_MIE = 1 << 3
MSTATUS_SPIE = 1 << 5
MSTATUS_UBE = 1 << 6
MSTATUS_MPIE = 1 << 7
MSTATUS_SPP = 1 << 8
MSTATUS_VS = 3 << 9
MSTATUS_MPP_SHIFT = 11
MSTATUS_MPP = 3 << 11
MSTATUS_FS_SHIFT = 13
MSTATUS_FS = 3 << 13
MSTATUS_XS = 3 << 15
MSTATUS_MPRV = 1 << 17
MSTATUS_SUM = 1 << 18
MSTATUS_MXR = 1 << 19
MSTATUS_TVM = 1 << 20
MSTATUS_TW = 1 << 21
MSTATUS_TSR = 1 << 22
MSTATUS_UXL = 3 << 32
MSTATUS_SXL = 3 << 34
MSTATUS_SD = -(1 << 63)  # bit 63, as a signed int64

# Bits of mstatus that software may write (the rest are read-only or derived).
MSTATUS_WRITABLE = (MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SPIE | MSTATUS_MPIE
                    | MSTATUS_SPP | MSTATUS_MPP | MSTATUS_FS | MSTATUS_MPRV
                    | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_TVM | MSTATUS_TW
                    | MSTATUS_TSR)
# The sstatus view of mstatus (4.1.1).
SSTATUS_MASK = (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_UBE | MSTATUS_SPP | MSTATUS_FS
                | MSTATUS_XS | MSTATUS_VS | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_UXL
                | MSTATUS_SD)
SSTATUS_WRITABLE = (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS
                    | MSTATUS_SUM | MSTATUS_MXR)
# UXL = SXL = 2 (64-bit), read-only.
MSTATUS_XLEN64 = (2 << 32) | (2 << 34)

# --- privilege levels -----------------------------------------------------------------
PRV_U = 0
PRV_S = 1
PRV_M = 3

# --- interrupts (3.1.9) ---------------------------------------------------------------
IRQ_SSI = 1
IRQ_MSI = 3
IRQ_STI = 5
IRQ_MTI = 7
IRQ_SEI = 9
IRQ_MEI = 11
MIP_SSIP = 1 << IRQ_SSI
MIP_MSIP = 1 << IRQ_MSI
MIP_STIP = 1 << IRQ_STI
MIP_MTIP = 1 << IRQ_MTI
MIP_SEIP = 1 << IRQ_SEI
MIP_MEIP = 1 << IRQ_MEI
# Supervisor-level interrupts that M-mode may delegate, and the bits of mip that
# software may write directly (MTIP/MSIP/MEIP come from the platform).
S_INTERRUPTS = MIP_SSIP | MIP_STIP | MIP_SEIP
ALL_INTERRUPTS = S_INTERRUPTS | MIP_MSIP | MIP_MTIP | MIP_MEIP
MIP_WRITABLE = MIP_SSIP | MIP_STIP | MIP_SEIP

INTERRUPT_BIT = -(1 << 63)  # mcause bit 63, as a signed int64

# --- exception causes (3.1.15) ------------------------------------------------------
CAUSE_MISALIGNED_FETCH = 0
CAUSE_FETCH_ACCESS = 1
CAUSE_ILLEGAL_INSTRUCTION = 2
CAUSE_BREAKPOINT = 3
CAUSE_MISALIGNED_LOAD = 4
CAUSE_LOAD_ACCESS = 5
CAUSE_MISALIGNED_STORE = 6
CAUSE_STORE_ACCESS = 7
CAUSE_USER_ECALL = 8
CAUSE_SUPERVISOR_ECALL = 9
CAUSE_MACHINE_ECALL = 11
CAUSE_FETCH_PAGE_FAULT = 12
CAUSE_LOAD_PAGE_FAULT = 13
CAUSE_STORE_PAGE_FAULT = 15

# --- satp (4.1.11) ----------------------------------------------------------------------
SATP_MODE_BARE = 0
SATP_MODE_SV39 = 8
SATP_MODE_SV48 = 9

# --- fflags (ISA vol. I, 11.2) ------------------------------------------------------
FFLAG_NX = 1
FFLAG_UF = 2
FFLAG_OF = 4
FFLAG_DZ = 8
FFLAG_NV = 16

# --- misa: RV64 + I M A F D C S U --------------------------------------------------
# MXL=2 puts bit 63 set; stored as a signed int64 like every CSR value.
MISA_RV64GC = -(1 << 63) + sum(1 << (ord(c) - ord("A")) for c in "IMAFDCSU")
