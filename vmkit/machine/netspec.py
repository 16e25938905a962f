"""`--net user[,restrict=on]` / `--net none` and `--mac XX:XX:XX:XX:XX:XX`.

`user` (the default, as QEMU's default NIC) is the rootless user-mode network
of vmkit/net/stack.py: guest 10.0.2.15, gateway 10.0.2.2 (also the host's
127.0.0.1 for UDP), DNS 10.0.2.3, addresses by DHCP.  restrict=on keeps the
guest to those virtual hosts (QEMU's restrict=on).  `none` attaches no NIC.
Host port forwards (hostfwd=) need the TCP layer and are refused for now.
"""

from dataclasses import dataclass

MODES = ("user", "none")
TRUE = ("on", "yes", "true", "1")
FALSE = ("off", "no", "false", "0")
# QEMU's first NIC: 52:54:00 (locally administered, unicast) then 12:34:56.
DEFAULT_MAC = bytes.fromhex("525400123456")


class NetSpecError(ValueError):
    pass


@dataclass(frozen=True)
class NetSpec:
    mode: str = "user"              # "user" or "none"
    restrict: bool = False
    mac: bytes = DEFAULT_MAC


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
        raise NetSpecError(f"--net {text!r}: use user[,restrict=on] or none")
    address = parse_mac(mac) if mac is not None else DEFAULT_MAC
    opts: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if mode == "none":
            raise NetSpecError(f"--net {text!r}: none takes no options")
        if key == "hostfwd":
            raise NetSpecError(f"--net {text!r}: hostfwd= (host port forwards) is not supported yet")
        if not sep or key != "restrict" or key in opts:
            raise NetSpecError(f"--net {text!r}: bad option {part!r} (use restrict=on|off)")
        opts[key] = value.strip().lower()
    restrict = opts.get("restrict", "off")
    if restrict not in TRUE + FALSE:
        raise NetSpecError(f"--net {text!r}: restrict must be on or off")
    return NetSpec(mode, restrict in TRUE, address)
