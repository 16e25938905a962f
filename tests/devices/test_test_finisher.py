"""vmkit/devices/test_finisher.py: sifive,test0 commands and bad accesses."""

import pytest

from vmkit.devices.test_finisher import TestFinisher
from vmkit.machine.fdt import FdtNode


@pytest.fixture
def halts():
    return []


@pytest.fixture
def dev(halts):
    return TestFinisher(lambda kind, code: halts.append((kind, code)))


@pytest.mark.parametrize("value,expected", [
    (0x5555, ("poweroff", 0)),
    (0x7777, ("reset", 0)),
    (0x3333, ("fail", 0)),
    ((42 << 16) | 0x3333, ("fail", 42)),
    ((0xFFFF << 16) | 0x3333, ("fail", 0xFFFF)),
])
def test_commands(dev, halts, value, expected):
    dev.write(0, 4, value)
    assert halts == [expected]


def test_16_bit_write(dev, halts):
    dev.write(0, 2, 0x5555)
    assert halts == [("poweroff", 0)]


@pytest.mark.parametrize("offset,size,value", [
    (0, 4, 0x1234), (0, 4, 0x5555_0000), (4, 4, 0x5555), (0, 1, 0x55), (0, 8, 0x5555), (2, 4, 0x5555),
])
def test_ignored_writes(dev, halts, offset, size, value):
    dev.write(offset, size, value)
    assert halts == []


def test_reads_zero_and_stateless(dev):
    assert dev.read(0, 4) == 0 and dev.read(3, 1) == 0
    assert dev.save() == {}
    dev.restore({})
    dev.reset()


def test_dt_node():
    root = FdtNode("")
    soc = root.child("soc")
    soc.prop_u32("#address-cells", 2)
    soc.prop_u32("#size-cells", 2)
    node = TestFinisher(lambda k, c: None).dt_node(soc)
    assert node.path == "/soc/test@100000"
    assert node.get_strlist("compatible") == ["sifive,test1", "sifive,test0", "syscon"]
    assert node.get_u32s("reg") == [0, 0x100000, 0, 0x1000]
    assert node.get_u32("phandle") == 1
