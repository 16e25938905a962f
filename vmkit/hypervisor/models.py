"""The hypervisor's data: what a user asks for (VmSpec), what the daemon
knows (VmInfo), what a worker is given (WorkerConfig), host capacity, events
and API errors.  One set of pydantic models, shared by the registry, the
REST API (they are its OpenAPI schema) and the CLI, so the three cannot
drift apart.  See docs/hypervisor.md.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MiB = 1 << 20
GiB = 1 << 30
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"             # a DNS label: also a safe directory name
NAME_RE = re.compile(NAME_PATTERN)
HOSTFWD_PATTERN = r"^(tcp|udp)?:[0-9.]{0,15}:[0-9]{1,5}-(10\.0\.2\.15)?:[0-9]{1,5}$"
MAX_CPUS = 1                                         # the board runs one hart (--smp > 1 is refused)
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 16 * 1024
MIN_DISK_GIB = 1
MAX_DISK_GIB = 2048


class VmState(str, enum.Enum):
    stopped = "stopped"      # defined, no worker
    starting = "starting"    # worker spawned, not yet answering
    running = "running"
    paused = "paused"
    stopping = "stopping"    # a graceful stop was asked; forced after the timeout
    crashed = "crashed"      # the worker died or the guest failed; see VmInfo.reason


class RestartPolicy(str, enum.Enum):
    no = "no"                # stays stopped/crashed
    on_failure = "on-failure"    # restarted after a crash, not after a clean poweroff
    always = "always"        # restarted after any exit the user did not ask for


class Limits(BaseModel):
    """Resource limits enforced on the VM's worker (Firecracker's rate limiter
    model for I/O: token buckets of bytes and operations per second; 0 means
    unlimited)."""
    model_config = ConfigDict(extra="forbid")

    cpu_weight: int = Field(100, ge=1, le=10000, description="share of host CPU under contention")
    cpu_max: float = Field(0.0, ge=0.0, le=64.0, description="hard cap in cores; 0 = no cap")
    disk_bytes_per_sec: int = Field(0, ge=0)
    disk_ops_per_sec: int = Field(0, ge=0)
    net_bytes_per_sec: int = Field(0, ge=0)
    net_packets_per_sec: int = Field(0, ge=0)
    console_log_bytes: int = Field(4 * MiB, ge=64 * 1024, le=1 << 30, description="serial.log cap")


JitMode = Literal["on", "off", "check"]   # vmkit.cpu.jitconfig.MODES


class VmSpec(BaseModel):
    """What a user asks for: the definition of a VM."""
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN, description="a DNS label: [a-z][a-z0-9-]{0,62}")
    image: str = Field("default", pattern=NAME_PATTERN, description="a pulled image (vmkit images ls)")
    cpus: int = Field(1, ge=1, le=MAX_CPUS, description="vCPUs (the board runs one hart for now)")
    memory_mib: int = Field(512, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    disk_gib: int = Field(4, ge=MIN_DISK_GIB, le=MAX_DISK_GIB, description="virtual size of the root disk")
    net: bool = Field(True, description="a NIC on the user-mode network")
    hostfwd: list[Annotated[str, Field(pattern=HOSTFWD_PATTERN)]] = Field(
        default_factory=list, max_length=32, description="port forwards as in --net user,hostfwd=, e.g. tcp::8080-:80")
    restart: RestartPolicy = RestartPolicy.no
    limits: Limits = Field(default_factory=Limits)
    append: str = Field("", max_length=1024, description="extra kernel command line")
    jit: JitMode = Field("on", description="the translating CPU tier: on, off (interpreter only), "
                         "or check (every translation checked against the interpreter)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("a VM name is a DNS label: a lowercase letter, then up to 62 of a-z 0-9 -")
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: int) -> int:
        if v > MAX_CPUS:
            raise ValueError(f"at most {MAX_CPUS} vCPU per VM for now (the board runs one hart)")
        return v


class VmUpdate(BaseModel):
    """Fields that may change while a VM is stopped."""
    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(None, ge=1, le=MAX_CPUS)
    memory_mib: int | None = Field(None, ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)
    restart: RestartPolicy | None = None
    limits: Limits | None = None
    hostfwd: list[Annotated[str, Field(pattern=HOSTFWD_PATTERN)]] | None = Field(None, max_length=32)
    append: str | None = Field(None, max_length=1024)


class VmInfo(BaseModel):
    spec: VmSpec
    state: VmState
    reason: str = Field("", description="why the VM stopped or crashed")
    pid: int | None = None
    created: float
    started: float | None = None
    restarts: int = 0
    console_tail: str = Field("", description="the last console output, for a crashed VM")
    instructions: int | None = None
    cpu_seconds: float | None = None
    rss_bytes: int | None = None


class Event(BaseModel):
    id: int
    time: float
    vm: str
    kind: str = Field(..., description="created, started, stopped, crashed, paused, resumed, restarted, deleted")
    detail: str = ""


class HostCapacity(BaseModel):
    cores: int
    memory_bytes: int
    disk_bytes: int = Field(..., description="free space under the state directory")
    cpu_overcommit: float
    memory_overcommit: float
    allocated_cpus: int
    allocated_memory_bytes: int
    running_vms: int


class WorkerConfig(BaseModel):
    """Everything a worker needs, written by the daemon to VMDIR/config.json.
    Paths are absolute; the worker opens nothing else (but the image files)."""
    model_config = ConfigDict(extra="forbid")

    name: str
    vm_dir: str
    memory_mib: int
    kernel: str
    initrd: str | None = None
    bios: str | None = None
    append: str
    disk: str                               # the VM's qcow2 overlay
    net: bool = True
    mac: str                                # stable per VM, from its name
    hostfwd: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    clock: str = "host"
    jit: JitMode = "on"
    uid: int | None = None                  # run as this uid/gid (sandbox.py) when started as root
    gid: int | None = None


class ApiError(BaseModel):
    """Every error the API returns: a class a program can switch on, and a message for people."""
    error: str = Field(..., description="not_found, conflict, invalid, capacity, unauthorized, internal")
    message: str
