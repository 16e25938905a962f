"""vmkit/devices/device.py: saved-state field checks."""

import pytest

from vmkit.devices.device import DeviceStateError, state_bytes, state_int, state_ints


def test_state_int():
    assert state_int({"a": 3}, "a", 0, 3) == 3
    assert state_int({"a": True}, "a", 0, 1) == 1
    for bad in ({"a": 4}, {"a": -1}, {"a": "1"}, {"a": 1.0}, {}, None, []):
        with pytest.raises(DeviceStateError):
            state_int(bad, "a", 0, 3)


def test_state_ints_and_bytes():
    assert state_ints({"a": [1, 2]}, "a", 2, 0, 2) == [1, 2]
    for bad in ({"a": [1]}, {"a": [1, 3]}, {"a": "12"}, {"a": (1, None)}):
        with pytest.raises(DeviceStateError):
            state_ints(bad, "a", 2, 0, 2)
    assert state_bytes({"b": bytearray(b"xy")}, "b", 2) == b"xy"
    for bad in ({"b": b"xyz"}, {"b": "xy"}, {}):
        with pytest.raises(DeviceStateError):
            state_bytes(bad, "b", 2)
