"""vmkit: RISC-V virtual machines and a hypervisor, written in Python."""

__version__ = "0.1.0"
