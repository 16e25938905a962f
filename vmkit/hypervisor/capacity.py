"""Host capacity and admission: may this VM start beside the ones running?

The host offers ``cores x cpu_overcommit`` vCPUs and ``memory x
memory_overcommit`` bytes. Each running VM takes its vCPUs, and its guest
RAM plus WORKER_OVERHEAD_BYTES (the worker process: Python, numba's compiled
code, device buffers). A start that would go past either is refused with a
CapacityError that names the resource, the need and what is free.

vCPUs can be overcommitted (the pacer shares cores by weight); memory by
default cannot: an overcommitted host swaps or meets the OOM killer, which
would take some VM down, not just refuse the newcomer. Disk is reported
but not admitted on: a VM's overlay disk starts nearly empty and grows.
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import HostCapacity, MiB, VmSpec

WORKER_OVERHEAD_BYTES = 200 * MiB


class CapacityError(Exception):
    """A VM does not fit on the host; the message names the resource."""


def host_totals(state_dir: str | os.PathLike, meminfo: str = "/proc/meminfo") -> tuple[int, int, int]:
    """``(cores, memory_bytes, disk_free_bytes)``: the cores this process may
    run on, the host's RAM, and the space free to us under ``state_dir``."""
    cores = len(os.sched_getaffinity(0))
    memory = _mem_total(meminfo)
    # The state directory may not exist yet (a first start): ask its nearest existing parent.
    path = Path(state_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return cores, memory, st.f_bavail * st.f_frsize


def _mem_total(meminfo: str) -> int:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024   # the kernel says kB and means KiB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def vm_memory_bytes(spec: VmSpec) -> int:
    """What a running VM takes from the host: guest RAM and its worker."""
    return spec.memory_mib * MiB + WORKER_OVERHEAD_BYTES


class Capacity:
    def __init__(self, cores: int, memory_bytes: int, disk_free_bytes: int,
                 cpu_overcommit: float = 4.0, memory_overcommit: float = 1.0) -> None:
        if cpu_overcommit <= 0 or memory_overcommit <= 0:
            raise ValueError("overcommit ratios must be positive")
        self.cores = cores
        self.memory_bytes = memory_bytes
        self.disk_free_bytes = disk_free_bytes
        self.cpu_overcommit = cpu_overcommit
        self.memory_overcommit = memory_overcommit

    @classmethod
    def of_host(cls, state_dir: str | os.PathLike, cpu_overcommit: float = 4.0,
                memory_overcommit: float = 1.0) -> Capacity:
        return cls(*host_totals(state_dir), cpu_overcommit=cpu_overcommit, memory_overcommit=memory_overcommit)

    @property
    def vcpus(self) -> int:
        return int(self.cores * self.cpu_overcommit)

    @property
    def memory_limit(self) -> int:
        return int(self.memory_bytes * self.memory_overcommit)

    def check_start(self, spec: VmSpec, running: list[VmSpec]) -> None:
        """Raise CapacityError unless ``spec`` fits beside ``running`` (the VMs
        already running; the VM itself is left out if it is in there)."""
        others = [s for s in running if s.name != spec.name]
        free_cpus = self.vcpus - sum(s.cpus for s in others)
        if spec.cpus > free_cpus:
            raise CapacityError(
                f"not enough cpu: vm {spec.name!r} needs {spec.cpus} vCPU, {max(free_cpus, 0)} of "
                f"{self.vcpus} vCPUs ({self.cores} cores, cpu overcommit {self.cpu_overcommit}) are free")
        need = vm_memory_bytes(spec)
        free = self.memory_limit - sum(vm_memory_bytes(s) for s in others)
        if need > free:
            raise CapacityError(
                f"not enough memory: vm {spec.name!r} needs {need // MiB} MiB ({spec.memory_mib} MiB of RAM "
                f"+ {WORKER_OVERHEAD_BYTES // MiB} MiB for its worker), {max(free, 0) // MiB} MiB of "
                f"{self.memory_limit // MiB} MiB (memory overcommit {self.memory_overcommit}) is free")

    def usage(self, running: list[VmSpec]) -> HostCapacity:
        return HostCapacity(cores=self.cores, memory_bytes=self.memory_bytes, disk_bytes=self.disk_free_bytes,
                            cpu_overcommit=self.cpu_overcommit, memory_overcommit=self.memory_overcommit,
                            allocated_cpus=sum(s.cpus for s in running),
                            allocated_memory_bytes=sum(vm_memory_bytes(s) for s in running),
                            running_vms=len(running))
