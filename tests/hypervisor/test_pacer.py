"""vmkit/hypervisor/pacer.py: the weighted max-min fair split and the worker's throttle."""

import pytest

from vmkit.hypervisor.pacer import BURST, Throttle, demand, fair_split


def approx(d):
    return {k: pytest.approx(v, abs=1e-9) for k, v in d.items()}


def test_hungry_vms_share_by_weight():
    assert fair_split(1.0, [("a", 1, 1.0, 0.5), ("b", 3, 1.0, 0.5)]) == approx({"a": 0.25, "b": 0.75})


def test_no_contention_beyond_caps():
    assert fair_split(2.0, [("a", 1, 1.0, 1.0), ("b", 3, 1.0, 1.0)]) == approx({"a": 1.0, "b": 1.0})


def test_idle_vm_share_goes_to_the_others():
    # c was allowed 0.5 and used 0.1 (not hungry): it wants 0.1*1.2+0.05 = 0.17.
    split = fair_split(1.0, [("a", 100, 1.0, 0.3), ("b", 100, 1.0, 0.3), ("c", 100, 1.0, 0.1)],
                       previous={"a": 0.33, "b": 0.33, "c": 0.5})
    assert split == approx({"a": 0.415, "b": 0.415, "c": 0.17})


def test_caps_respected_and_leftover_to_uncapped():
    split = fair_split(2.0, [("a", 100, 0.2, 0.2), ("b", 100, 1.0, 1.0), ("c", 300, 1.0, 1.0)])
    assert split["a"] == pytest.approx(0.2)
    # 1.8 left for b and c by weight 1:3 = 0.45/1.35, but c is capped at 1.
    assert split["c"] == pytest.approx(1.0)
    assert split["b"] == pytest.approx(0.8)


def test_split_never_exceeds_cores_or_caps():
    import random
    rng = random.Random(1)
    for _ in range(500):
        vms = [(f"v{i}", rng.randint(1, 10000), rng.choice((0.1, 0.5, 1.0)), rng.random())
               for i in range(rng.randint(1, 8))]
        previous = {name: rng.random() for name, *_ in vms if rng.random() < 0.7}
        cores = rng.choice((1.0, 2.0, 4.0))
        split = fair_split(cores, vms, previous)
        assert set(split) == {name for name, *_ in vms}
        assert sum(split.values()) <= cores + 1e-9
        for name, _, cap, used in vms:
            assert 0 <= split[name] <= min(cap, demand(cap, used, previous.get(name))) + 1e-9


def test_demand():
    assert demand(1.0, 0.45, 0.5) == 1.0                   # used 90%: hungry
    assert demand(1.0, 0.2, 0.5) == pytest.approx(0.29)    # 0.2*1.2 + 0.05
    assert demand(0.25, 0.3, 1.0) == 0.25                  # never past the cap
    assert demand(1.0, 0.0, None) == 1.0                   # no allowance yet: hungry


def test_throttle_unlimited():
    for allowance in (0.0, 1.0, 2.0):
        t = Throttle(allowance)
        assert not t.limited
        assert t.wait_needed(0.0, 0.0) == 0.0
        assert t.wait_needed(100.0, 1.0) == 0.0


def test_throttle_holds_cpu_to_allowance():
    t = Throttle(0.25)
    assert t.wait_needed(10.0, 1000.0) == 0.0              # sets the origin
    # 0.1 s of CPU earns 0.4 s of wall time; 0.1 s has passed: wait 0.3 s.
    assert t.wait_needed(10.1, 1000.1) == pytest.approx(0.3)
    assert t.wait_needed(10.1, 1000.4) == pytest.approx(0.0)
    # A steady run: CPU 0.05 per slice, then the wait; CPU/wall stays at 0.25.
    cpu, wall = 10.1, 1000.4
    for _ in range(100):
        cpu += 0.05
        wall += 0.05
        wall += t.wait_needed(cpu, wall)
    assert (cpu - 10.0) / (wall - 1000.0) == pytest.approx(0.25, rel=1e-6)


def test_throttle_banks_at_most_a_burst_of_idle_time():
    t = Throttle(0.5)
    t.wait_needed(0.0, 0.0)
    assert t.wait_needed(0.0, 60.0) == 0.0                 # a minute idle
    # Now flat out: only BURST of credit remains, not a minute's worth.
    assert t.wait_needed(0.5, 60.5) == pytest.approx(1.0 - 0.5 - BURST)


def test_throttle_new_allowance_starts_afresh():
    t = Throttle(0.1)
    t.wait_needed(0.0, 0.0)
    assert t.wait_needed(1.0, 1.0) == pytest.approx(9.0)
    t.set_allowance(0.5)
    assert t.wait_needed(1.0, 1.0) == 0.0
    assert t.wait_needed(1.5, 1.5) == pytest.approx(0.5)
