"""vmkit/hypervisor/capacity.py: host totals and the admission check."""

import os

import pytest

from vmkit.hypervisor.capacity import WORKER_OVERHEAD_BYTES, Capacity, CapacityError, host_totals
from vmkit.hypervisor.models import GiB, MiB, VmSpec

OVERHEAD_MIB = WORKER_OVERHEAD_BYTES // MiB


def vm(name: str, memory_mib: int = 512) -> VmSpec:
    return VmSpec(name=name, memory_mib=memory_mib)


def test_host_totals(tmp_path):
    cores, memory, disk = host_totals(tmp_path)
    assert cores == len(os.sched_getaffinity(0)) >= 1
    assert memory > 64 * MiB and disk > 0
    # A state directory that does not exist yet is measured on its parent's file system.
    assert host_totals(tmp_path / "not" / "yet")[0] == cores


def test_host_totals_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        8388608 kB\nMemFree:  1 kB\n")
    assert host_totals(tmp_path, meminfo=str(meminfo))[1] == 8 * GiB
    # Unreadable: the page count from sysconf instead of a failure.
    assert host_totals(tmp_path, meminfo=str(tmp_path / "missing"))[1] > 0


def test_memory_fits_exactly_at_the_edge():
    # Two VMs of 1848 MiB + overhead are 2 x 2048 MiB: exactly a 4 GiB host.
    cap = Capacity(cores=4, memory_bytes=4 * GiB, disk_free_bytes=GiB)
    size = 2048 - OVERHEAD_MIB
    cap.check_start(vm("b", size), [vm("a", size)])
    with pytest.raises(CapacityError) as e:
        cap.check_start(vm("b", size + 1), [vm("a", size)])
    assert str(e.value) == (f"not enough memory: vm 'b' needs 2049 MiB ({size + 1} MiB of RAM + "
                            f"{OVERHEAD_MIB} MiB for its worker), 2048 MiB of 4096 MiB "
                            "(memory overcommit 1.0) is free")


def test_memory_overcommit_and_refusal_message():
    cap = Capacity(cores=4, memory_bytes=4 * GiB, disk_free_bytes=GiB, memory_overcommit=2.0)
    running = [vm(f"vm{i}", 1024 - OVERHEAD_MIB) for i in range(7)]   # 7 GiB of 8
    cap.check_start(vm("web", 1024 - OVERHEAD_MIB), running)
    with pytest.raises(CapacityError, match=r"^not enough memory: vm 'web' needs 2048 MiB .* "
                                            r"1024 MiB of 8192 MiB \(memory overcommit 2.0\) is free$"):
        cap.check_start(vm("web", 2048 - OVERHEAD_MIB), running)


def test_cpu_refusal_at_the_edge():
    cap = Capacity(cores=2, memory_bytes=64 * GiB, disk_free_bytes=GiB, cpu_overcommit=1.5)
    running = [vm("a", 64), vm("b", 64)]
    cap.check_start(vm("c", 64), running)   # 3 vCPUs of int(2 x 1.5)
    with pytest.raises(CapacityError) as e:
        cap.check_start(vm("d", 64), running + [vm("c", 64)])
    assert str(e.value) == ("not enough cpu: vm 'd' needs 1 vCPU, 0 of 3 vCPUs "
                            "(2 cores, cpu overcommit 1.5) are free")


def test_the_vm_itself_is_not_counted_twice():
    cap = Capacity(cores=1, memory_bytes=GiB, disk_free_bytes=GiB, cpu_overcommit=1.0)
    web = vm("web")
    cap.check_start(web, [web])   # a restart: its old entry is left out
    with pytest.raises(CapacityError, match="not enough cpu"):
        cap.check_start(web, [vm("other", 64)])


def test_usage():
    cap = Capacity(cores=8, memory_bytes=16 * GiB, disk_free_bytes=100 * GiB)
    u = cap.usage([vm("a", 512), vm("b", 1024)])
    assert (u.cores, u.memory_bytes, u.disk_bytes) == (8, 16 * GiB, 100 * GiB)
    assert (u.cpu_overcommit, u.memory_overcommit) == (4.0, 1.0)
    assert (u.allocated_cpus, u.running_vms) == (2, 2)
    assert u.allocated_memory_bytes == 1536 * MiB + 2 * WORKER_OVERHEAD_BYTES
    assert cap.usage([]).allocated_memory_bytes == 0


def test_of_host(tmp_path):
    cap = Capacity.of_host(tmp_path, cpu_overcommit=2.0)
    assert cap.cores == len(os.sched_getaffinity(0)) and cap.cpu_overcommit == 2.0
    with pytest.raises(ValueError):
        Capacity(1, GiB, GiB, cpu_overcommit=0)
