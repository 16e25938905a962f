"""The shape every board device has, and helpers the devices share.

A device sees offsets, never addresses (Firecracker's BusDevice): the bus
maps its window and calls `read(offset, size)` / `write(offset, size, value)`
with `offset` relative to the device's base.  Everything a guest writes is
hostile, so a bad access (unknown offset, unsupported width, misalignment) is
logged as a guest error and ignored (reads return 0); it never raises.

Saved state comes from files that may be corrupt: `restore` checks every field
first and raises DeviceStateError, leaving the device unchanged, when one is
missing or out of range.
"""

import logging
from collections.abc import Mapping
from typing import Any, Protocol


class Device(Protocol):
    """The interface the bus and the machine use."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...

    def reset(self) -> None: ...

    def save(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


class DeviceStateError(ValueError):
    """A saved device state is corrupt or incompatible; the restore was refused."""


def guest_error(log: logging.Logger, message: str, *args: object) -> None:
    """Record a guest access the device ignores (QEMU's LOG_GUEST_ERROR).

    DEBUG level: a guest can trigger this in a loop, so it must cost nothing
    and fill no log unless someone asked for it.
    """
    log.debug("guest error: " + message, *args)


def state_int(state: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    """`state[key]`, an int (or bool) in lo..hi inclusive."""
    value = state.get(key) if isinstance(state, Mapping) else None
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise DeviceStateError(f"saved state field {key!r} = {value!r} is not an integer in {lo}..{hi}")
    return value


def state_ints(state: Mapping[str, Any], key: str, count: int, lo: int, hi: int) -> list[int]:
    """`state[key]`, a sequence of exactly `count` ints in lo..hi."""
    value = state.get(key) if isinstance(state, Mapping) else None
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise DeviceStateError(f"saved state field {key!r} is not a list of {count} integers")
    return [state_int({key: v}, key, lo, hi) for v in value]


def state_bytes(state: Mapping[str, Any], key: str, max_len: int) -> bytes:
    """`state[key]`, bytes of at most `max_len`."""
    value = state.get(key) if isinstance(state, Mapping) else None
    if not isinstance(value, (bytes, bytearray)) or len(value) > max_len:
        raise DeviceStateError(f"saved state field {key!r} is not bytes of at most {max_len}")
    return bytes(value)
