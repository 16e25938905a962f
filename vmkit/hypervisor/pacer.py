"""CPU shares without cgroups: the daemon's fair split of the host's cores
among running VMs, and the worker's throttle that holds it to its share.

Every second the daemon measures each VM's CPU use and calls `fair_split`:
weighted max-min fairness (water filling, as cgroup v2's cpu.weight gives
under contention), where a VM never gets more than its cap (vCPUs, or
cpu_max) nor more than it wants.  What a VM wants is guessed from its last
second: one that used (nearly) all it was allowed is hungry and wants its
cap; one that used less wants what it used plus headroom, and what it leaves
goes to the hungry ones by weight.  Each worker is sent its allowance
(docs/hypervisor.md, "cpu" request) and enforces it with a `Throttle`.
"""

from __future__ import annotations

# A VM that used this share of its previous allowance is hungry: it might
# have used more, so it asks for its cap.
HUNGRY = 0.9
# A VM that is not hungry asks for what it used, plus this much (relative and
# in cores) so it can grow by a fifth a second before it counts as hungry.
HEADROOM = 1.2
HEADROOM_MIN = 0.05
# Throttle: the most idle time (wall seconds) a worker banks and may then
# spend running flat out; more would let an idle VM burst past its share.
BURST = 0.1


def demand(cap: float, used: float, previous: float | None) -> float:
    """What a VM wants next (cores): its cap when it is hungry (used ≥ 90% of
    its `previous` allowance, or it has none yet), else used×1.2 + 0.05."""
    if previous is None or used >= HUNGRY * previous:
        return cap
    return min(cap, used * HEADROOM + HEADROOM_MIN)


def fair_split(cores: float, vms: list[tuple[str, int, float, float]],
               previous: dict[str, float] | None = None) -> dict[str, float]:
    """Share `cores` among `vms`, each (name, weight, cap, used): weighted
    max-min fair, each VM's allocation ≤ min(cap, its demand).  `previous`
    holds each VM's last allowance (a VM missing from it counts as hungry).

    Water filling: offer every unsatisfied VM its weight's share of what is
    left; those that want less take what they want and drop out, and the
    rest is offered again, until everyone left wants more than its share.
    Cores nobody wants stay unallocated.
    """
    previous = previous or {}
    want = {name: max(0.0, demand(cap, used, previous.get(name))) for name, _, cap, used in vms}
    weight = {name: max(1, w) for name, w, _, _ in vms}
    share: dict[str, float] = {}
    left = max(0.0, cores)
    active = [name for name, _, _, _ in vms]
    while active:
        total = sum(weight[n] for n in active)
        offer = {n: left * weight[n] / total for n in active}
        satisfied = [n for n in active if want[n] <= offer[n]]
        if not satisfied:
            share.update(offer)
            break
        for n in satisfied:
            share[n] = want[n]
            left = max(0.0, left - want[n])
            active.remove(n)
    return share


class Throttle:
    """Holds a process to `allowance` cores: its CPU time may grow at most
    allowance × wall time.  The worker asks `wait_needed` between instruction
    slices and sleeps that long.  An allowance of 0 or ≥ 1 does not limit a
    one-vCPU VM (it cannot use more than one core, and 0 means "no word from
    the pacer").  Pure arithmetic on the readings it is given, so it is
    testable without clocks.
    """

    def __init__(self, allowance: float = 0.0) -> None:
        self.set_allowance(allowance)

    def set_allowance(self, allowance: float) -> None:
        self.allowance = allowance
        self._origin: tuple[float, float] | None = None   # (cpu, wall) the budget counts from

    @property
    def limited(self) -> bool:
        return 0 < self.allowance < 1

    def wait_needed(self, cpu_seconds: float, wall: float) -> float:
        """Seconds to sleep so that CPU time since the origin stays within
        allowance × wall time since it.  `cpu_seconds` is the process's CPU
        time, `wall` a monotonic clock, both in seconds."""
        if not self.limited:
            return 0.0
        if self._origin is None:
            self._origin = (cpu_seconds, wall)
            return 0.0
        cpu0, wall0 = self._origin
        # Wall time the CPU used so far entitles to, minus the wall time gone by.
        wait = (cpu_seconds - cpu0) / self.allowance - (wall - wall0)
        if wait < -BURST:
            # Idle for a while: keep only BURST of credit, so a VM that slept
            # cannot then run flat out for as long as it slept.
            self._origin = (cpu_seconds, wall - BURST)
            return 0.0
        return max(0.0, wait)
