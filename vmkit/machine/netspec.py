"""`--net user[,hostfwd=...][,restrict=on]` / `--net none` and `--mac XX:XX:XX:XX:XX:XX`.

`user` (the default, as QEMU's default NIC) is the rootless user-mode network
of vmkit/net/stack.py: guest 10.0.2.15, gateway 10.0.2.2 (the host's
127.0.0.1), DNS 10.0.2.3, addresses by DHCP.  restrict=on keeps the guest to
those virtual hosts and its forwards (QEMU's restrict=on).  `none` attaches
no NIC.

hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (repeatable) is
QEMU's syntax for a host port forwarded to a guest port. One difference: an
empty HOSTADDR means 127.0.0.1 here, not every interface as in QEMU, so a
forward does not open the guest to the network by accident; give 0.0.0.0 to
listen everywhere. HOSTPORT 0 lets the host pick a free port.
"""

import ipaddress
from dataclasses import dataclass

from vmkit.net.forward import HostForward

MODES = ("user", "none")
TRUE = ("on", "yes", "true", "1")
FALSE = ("off", "no", "false", "0")
# QEMU's first NIC: 52:54:00 (locally administered, unicast) then 12:34:56.
DEFAULT_MAC = bytes.fromhex("525400123456")


class NetSpecError(ValueError):
    pass


GUEST_ADDR = "10.0.2.15"            # the only guest address a forward can reach
DEFAULT_HOST_ADDR = "127.0.0.1"


@dataclass(frozen=True)
class NetSpec:
    mode: str = "user"              # "user" or "none"
    restrict: bool = False
    mac: bytes = DEFAULT_MAC
    forwards: tuple[HostForward, ...] = ()


def _port(text: str, what: str, rule: str, allow_zero: bool) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise NetSpecError(f"hostfwd={rule}: bad {what} port {text!r}")
    return port


def parse_hostfwd(rule: str) -> HostForward:
    """[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, as QEMU's -netdev user,hostfwd=."""
    host, dash, guest = rule.partition("-")
    fields = host.split(":")
    if not dash or len(fields) != 3:
        raise NetSpecError(f"hostfwd={rule}: use [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT")
    proto, host_addr, host_port = fields[0].lower() or "tcp", fields[1] or DEFAULT_HOST_ADDR, fields[2]
    if proto not in ("tcp", "udp"):
        raise NetSpecError(f"hostfwd={rule}: the protocol must be tcp or udp")
    try:
        ipaddress.IPv4Address(host_addr)
    except ValueError:
        raise NetSpecError(f"hostfwd={rule}: the host address must be an IPv4 address") from None
    guest_addr, colon, guest_port = guest.rpartition(":")
    if not colon:
        raise NetSpecError(f"hostfwd={rule}: missing the guest port after ':'")
    if guest_addr not in ("", GUEST_ADDR):
        raise NetSpecError(f"hostfwd={rule}: the guest address can only be {GUEST_ADDR} (the DHCP lease)")
    return HostForward(proto, host_addr, _port(host_port, "host", rule, True),
                       _port(guest_port, "guest", rule, False))


def parse_mac(text: str) -> bytes:
    parts = text.strip().split(":")
    try:
        if len(parts) != 6 or any(len(p) != 2 for p in parts):
            raise ValueError
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise NetSpecError(f"--mac {text!r}: use six hex bytes, e.g. 52:54:00:12:34:56") from None
    if mac[0] & 1:
        raise NetSpecError(f"--mac {text!r}: a multicast address (the first byte must be even)")
    if mac == bytes(6):
        raise NetSpecError(f"--mac {text!r}: the all-zero address is not a NIC's address")
    return mac


def parse_net(text: str, mac: str | None = None) -> NetSpec:
    parts = text.split(",")
    mode = parts[0].strip().lower()
    if mode not in MODES:
        raise NetSpecError(f"--net {text!r}: use user[,hostfwd=...][,restrict=on] or none")
    address = parse_mac(mac) if mac is not None else DEFAULT_MAC
    opts: dict[str, str] = {}
    forwards: list[HostForward] = []
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if mode == "none":
            raise NetSpecError(f"--net {text!r}: none takes no options")
        if sep and key == "hostfwd":
            forwards.append(parse_hostfwd(value.strip()))
            continue
        if not sep or key != "restrict" or key in opts:
            raise NetSpecError(f"--net {text!r}: bad option {part!r} (use hostfwd=... or restrict=on|off)")
        opts[key] = value.strip().lower()
    restrict = opts.get("restrict", "off")
    if restrict not in TRUE + FALSE:
        raise NetSpecError(f"--net {text!r}: restrict must be on or off")
    listening = [(f.proto, f.host_addr, f.host_port) for f in forwards if f.host_port]
    if len(set(listening)) != len(listening):
        raise NetSpecError(f"--net {text!r}: two forwards listen on the same host port")
    return NetSpec(mode, restrict in TRUE, address, tuple(forwards))
