"""What a worker gives up before it runs guest code.

A worker first opens everything its VM needs (the CPU core's compiled code,
kernel, disks, forwarded ports) and then, before the first guest
instruction:

1. drops to the VM's own unprivileged uid/gid when started as root (the
   daemon gives each VM a uid of its own and hands it the VM directory), so
   one VM's worker cannot open another's files;
2. sets no-new-privileges (prctl PR_SET_NO_NEW_PRIVS), so nothing it could
   exec would gain privileges;
3. caps its address space (RLIMIT_AS) at guest RAM plus a headroom, so a
   leak or a hostile guest that makes the host side allocate cannot take
   the host's memory: the worker gets MemoryError and exits, alone;
4. loads a seccomp filter (through libseccomp, when the host has it) that
   refuses, with EPERM, the system calls a worker never needs and an
   attacker would want: exec, ptrace and cross-process memory access,
   mounts and namespaces, kernel modules, BPF, perf, keyrings, reboot and
   clock setting. A deny list rather than an allow list: CPython, numba and
   numpy use a wide and version-dependent set of calls.

Each step reports what it did; a host without libseccomp gets steps 1-3.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import resource

PR_SET_NO_NEW_PRIVS = 38
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
UID_BASE = 200_000              # per-VM uids: far above distributions' user and system ranges
UID_SPAN = 100_000
# Address space a worker may use beyond its guest RAM: CPython, numba's
# compiled core, LLVM, thread stacks and malloc arenas reserve ~0.5 GiB.
ADDRESS_SPACE_HEADROOM = 1536 << 20

DENIED_SYSCALLS = (
    "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm",
)


class SandboxError(Exception):
    pass


def vm_uid(name: str, taken: set[int]) -> int:
    """A uid for the VM: stable for its name, different from the `taken` ones."""
    uid = UID_BASE + int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % UID_SPAN
    while uid in taken:
        uid = UID_BASE + (uid - UID_BASE + 1) % UID_SPAN
    return uid


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SandboxError(f"could not become uid {uid}")


def set_no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")


def _libseccomp():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def load_seccomp_filter(denied=DENIED_SYSCALLS) -> int | None:
    """Refuse the denied system calls with EPERM; returns how many rules were
    loaded, or None when libseccomp is not on this host."""
    lib = _libseccomp()
    if lib is None:
        return None
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxError("seccomp_init failed")
    try:
        rules = 0
        for name in denied:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue                    # not a system call on this architecture
            rc = lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO | errno.EPERM, nr, 0)
            if rc < 0:
                raise SandboxError(f"seccomp_rule_add({name}): {os.strerror(-rc)}")
            rules += 1
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SandboxError(f"seccomp_load: {os.strerror(-rc)}")
        return rules
    finally:
        lib.seccomp_release(ctx)


def cap_address_space(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard if hard != resource.RLIM_INFINITY else limit))


def harden(uid: int | None = None, gid: int | None = None, address_space: int | None = None) -> list[str]:
    """The steps of the module docstring; returns what was done, for the log."""
    done = []
    if uid is not None and os.geteuid() == 0:
        drop_privileges(uid, gid if gid is not None else uid)
        done.append(f"uid/gid {uid}/{gid if gid is not None else uid}")
    set_no_new_privs()
    done.append("no-new-privs")
    if address_space is not None:
        cap_address_space(address_space)
        done.append(f"address space {address_space >> 20} MiB")
    rules = load_seccomp_filter()
    done.append(f"seccomp ({rules} denied system calls)" if rules is not None else "no seccomp (no libseccomp)")
    return done
