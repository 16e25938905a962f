"""Rootless user-mode networking: the guest's gateway, DHCP and DNS server,
and a NAT that relays its traffic through ordinary host sockets.

The same shape as QEMU's slirp/passt "user" network, with its defaults:

    10.0.2.0/24     guest network
    10.0.2.2        gateway (MAC 52:55:0a:00:02:02); also "the host": UDP to
                    it is relayed to the host's 127.0.0.1
    10.0.2.3        DNS forwarder (answers through the host's resolver)
    10.0.2.15       the guest's address, handed out by DHCP

Frames come from the guest's NIC through `from_guest`; frames for the guest
go out through the `send_to_guest` callback, either right away (ARP, ICMP
echo, DHCP, DNS errors) or from `poll`, which the VM loop calls to collect
host-socket replies and finished DNS lookups. Nothing here blocks: host
sockets are non-blocking behind one selector and name lookups run on a small
bounded thread pool.

Every frame that is not handled is dropped and counted in `counters` under
the reason (RELIABILITY.md, "Network (user-mode NAT)"); `from_guest` never
raises on guest input.

TCP connections from the guest are terminated and relayed over host stream
sockets by vmkit/net/tcp.py (tcp=False turns that off: every segment is then
dropped and counted as "tcp"). Host port forwards (forward.py) bring host
connections and datagrams in; to the guest they come from 10.0.2.2.

Not here yet: ICMP other than echo to the virtual hosts.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ipaddress
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from vmkit.net import dhcp, dns, fragments, tcp as tcp_relay
from vmkit.net.forward import ACCEPT_BURST, HostForward, Listener, open_listeners
from vmkit.net.packets import (
    ARP_OP_REPLY, ARP_OP_REQUEST, ETH_BROADCAST, ETH_P_ARP, ETH_P_IP, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MalformedFrame,
    build_arp, build_ethernet, build_icmp, build_ipv4_udp_frame, build_udp, parse_arp, parse_ethernet,
    parse_icmp, parse_ipv4, parse_tcp, parse_udp,
)

NETWORK = ipaddress.IPv4Network("10.0.2.0/24")
NETMASK = NETWORK.netmask.packed
GATEWAY_IP = bytes([10, 0, 2, 2])
DNS_IP = bytes([10, 0, 2, 3])
GUEST_IP = bytes([10, 0, 2, 15])
NET_BROADCAST_IP = NETWORK.broadcast_address.packed
LIMITED_BROADCAST_IP = b"\xff\xff\xff\xff"
UNSPECIFIED_IP = b"\0\0\0\0"
HOST_LOOPBACK = "127.0.0.1"     # where the gateway address leads on the host


def virtual_mac(ip: bytes) -> bytes:
    """The MAC of a virtual host: 52:55 then its IPv4 address, as QEMU's slirp does."""
    return b"\x52\x55" + ip


GATEWAY_MAC = virtual_mac(GATEWAY_IP)
VIRTUAL_HOSTS = {GATEWAY_IP: GATEWAY_MAC, DNS_IP: virtual_mac(DNS_IP)}

MAX_UDP_FLOWS = 64              # per VM: host sockets held open for guest UDP
UDP_IDLE_TIMEOUT = 60.0         # seconds without traffic either way before a flow is closed
REAP_INTERVAL = 1.0
RECV_BURST = 16                 # datagrams read from one flow per poll, so one flow cannot starve others
DNS_WORKERS = 4
MAX_DNS_PENDING = 32            # lookups in flight; more are dropped (the guest resolver retries)

Resolver = Callable[[str], list[str]]


def host_resolve(name: str) -> list[str]:
    """IPv4 addresses of name from the host's resolver; [] if the name does not exist.
    Other failures (no network, a timeout) raise, and become SERVFAIL."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return []
        raise
    return list(dict.fromkeys(info[4][0] for info in infos))


def _relay_denied(ip: bytes) -> bool:
    """Guest destinations the NAT never opens a socket to, besides the guest
    network itself: host loopback (reach it as 10.0.2.2), link-local (cloud
    metadata), multicast, unspecified and reserved addresses."""
    a = ipaddress.IPv4Address(ip)
    return (a in NETWORK or a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified
            or a.is_reserved)


@dataclass
class _UdpFlow:
    sock: socket.socket
    guest_mac: bytes
    guest_port: int
    remote_ip: bytes            # as the guest sees it (10.0.2.2 for the host)
    remote_port: int
    last_used: float


@dataclass(eq=False)     # hashed by identity: kept in a set while in flight
class _DnsLookup:
    query: dns.DnsQuery
    guest_mac: bytes
    guest_port: int
    future: concurrent.futures.Future


class UserNet:
    """One VM's user-mode network. Not thread-safe: call from the VM loop only."""

    def __init__(self, send_to_guest: Callable[[bytes], None], *, restrict: bool = False,
                 dns_resolver: Resolver = host_resolve,
                 allow_relay: Callable[[str, int], bool] | None = None,
                 max_udp_flows: int = MAX_UDP_FLOWS, udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, tcp: bool = True,
                 max_tcp_conns: int = tcp_relay.MAX_TCP_CONNS,
                 max_tcp_buffered: int = tcp_relay.MAX_TCP_BUFFERED,
                 tcp_isn: Callable[[], int] | None = None,
                 forwards: tuple[HostForward, ...] = (), guest_mac: bytes | None = None):
        """restrict: the guest reaches only the virtual hosts (QEMU's restrict=on).
        allow_relay(host_ip, port): extra policy for relayed destinations, asked
        before a flow is opened; tests use it to keep traffic on loopback.
        tcp: relay the guest's outbound TCP connections (vmkit/net/tcp.py;
        off, every TCP segment is dropped and counted as "tcp"),
        at most max_tcp_conns at once and max_tcp_buffered host-to-guest bytes
        held; tcp_isn picks initial sequence numbers (random by default;
        tests and the fuzzer fix it).
        forwards: host ports forwarded to guest ports, bound here (a port in
        use raises forward.ForwardError); guest_mac: the NIC's address,
        where forwarded traffic is sent before the guest has said anything."""
        self._send = send_to_guest
        self.restrict = restrict
        self._resolve = dns_resolver
        self._allow_relay = allow_relay
        self.max_udp_flows = max_udp_flows
        self.udp_idle_timeout = udp_idle_timeout
        self._clock = clock
        self.counters: collections.Counter[str] = collections.Counter()
        self._fragments = fragments.Reassembler(clock=clock, counters=self.counters)
        self._ident = 0
        self._udp_flows: dict[tuple[int, bytes, int], _UdpFlow] = {}
        self.guest_mac = guest_mac
        self._listeners: list[Listener] = open_listeners(forwards)
        self._selector = selectors.DefaultSelector()
        for listener in self._listeners:
            self._selector.register(listener.sock, selectors.EVENT_READ, listener)
        # Worker threads finishing a lookup wake a poll() sleeping in select().
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._dns_pool = concurrent.futures.ThreadPoolExecutor(DNS_WORKERS, thread_name_prefix="vmkit-dns")
        self._dns_pending: set[_DnsLookup] = set()
        self._dns_done: collections.deque[_DnsLookup] = collections.deque()
        self._last_reap = clock()
        self._closed = False
        self._tcp: tcp_relay.TcpRelay | None = None
        self._tcp_frames = 0                    # TCP frames sent, so poll() can count its own
        if tcp:
            self._tcp = tcp_relay.TcpRelay(self._send_tcp, self._selector, clock, self._next_ident, self.counters,
                                           self._tcp_policy, GUEST_IP, max_conns=max_tcp_conns,
                                           max_buffered=max_tcp_buffered, isn=tcp_isn)

    # ------------------------------------------------------------ frames in

    def from_guest(self, frame: bytes) -> None:
        """Handle one Ethernet frame the guest sent."""
        if self._closed:
            self._drop("closed")
            return
        try:
            self._handle_frame(frame)
        except MalformedFrame:
            self._drop("malformed")

    def _drop(self, reason: str) -> None:
        self.counters[reason] += 1

    def _handle_frame(self, frame: bytes) -> None:
        eth = parse_ethernet(frame)
        if eth.src[0] & 1:
            self._drop("eth_bad_source")        # a multicast/broadcast source address
            return
        if eth.dst != ETH_BROADCAST and eth.dst not in VIRTUAL_HOSTS.values():
            self._drop("eth_not_for_us")
            return
        if self.guest_mac is None:
            self.guest_mac = eth.src
        if eth.ethertype == ETH_P_ARP:
            self._handle_arp(eth.src, parse_arp(eth.payload))
        elif eth.ethertype == ETH_P_IP:
            self._handle_ipv4(eth.src, eth.payload)
        else:
            self._drop("ethertype")             # IPv6 and the rest: not served

    def _handle_arp(self, src_mac: bytes, arp) -> None:
        # An ARP probe (RFC 5227 2.1.1) has sender address 0.0.0.0.
        if arp.spa not in (GUEST_IP, UNSPECIFIED_IP) or arp.sha != src_mac:
            self._drop("spoofed_source")
            return
        if arp.op != ARP_OP_REQUEST or arp.tpa not in VIRTUAL_HOSTS:
            self._drop("arp_not_for_us")        # the guest's own announcements and probes
            return
        # RFC 826 "Packet Reception": answer with our hardware address, swapping sender and target.
        mac = VIRTUAL_HOSTS[arp.tpa]
        reply = build_arp(ARP_OP_REPLY, mac, arp.tpa, arp.sha, arp.spa)
        self._send(build_ethernet(src_mac, mac, ETH_P_ARP, reply))

    def _handle_ipv4(self, src_mac: bytes, data: bytes) -> None:
        ip = parse_ipv4(data)
        if ip.is_fragment:
            # Reassembled first (fragments.py: overlaps refused, memory and
            # time capped, drops counted as frag_*), then handled like any
            # datagram. Only the guest's own address fragments: a DHCP client
            # at 0.0.0.0 never needs to.
            if ip.src != GUEST_IP:
                self._drop("spoofed_source")
                return
            whole = self._fragments.add(ip)
            if whole is None:
                return
            ip = parse_ipv4(whole)
        udp = parse_udp(ip) if ip.proto == IPPROTO_UDP else None
        if ip.src != GUEST_IP:
            # Only a DHCP client without an address may use 0.0.0.0 (RFC 2131 4.1).
            if not (ip.src == UNSPECIFIED_IP and udp is not None and udp.dport == dhcp.SERVER_PORT):
                self._drop("spoofed_source")
                return
        if ip.proto == IPPROTO_UDP:
            self._handle_udp(src_mac, ip, udp)
        elif ip.proto == IPPROTO_ICMP:
            self._handle_icmp(src_mac, ip, parse_icmp(ip.payload))
        elif ip.proto == IPPROTO_TCP:
            self._handle_tcp(src_mac, ip)
        else:
            self._drop("ip_protocol")

    def _handle_icmp(self, src_mac: bytes, ip, icmp) -> None:
        if ip.dst not in VIRTUAL_HOSTS:
            # XXX: echo to other hosts needs unprivileged ICMP ("ping") sockets.
            self._drop("icmp_unsupported")
            return
        if icmp.type != ICMP_ECHO_REQUEST or icmp.code != 0:
            self._drop("icmp_unsupported")
            return
        # RFC 792 "Echo or Echo Reply Message": same identifier, sequence and data.
        reply = build_icmp(ICMP_ECHO_REPLY, 0, icmp.rest, icmp.payload)
        # A reassembled request can be bigger than the MTU, and so can its reply.
        for packet in fragments.build_ipv4_fragments(ip.dst, ip.src, IPPROTO_ICMP, reply, ident=self._next_ident()):
            self._send(build_ethernet(src_mac, VIRTUAL_HOSTS[ip.dst], ETH_P_IP, packet))

    def _handle_udp(self, src_mac: bytes, ip, udp) -> None:
        if udp.dport == dhcp.SERVER_PORT and ip.dst in (GATEWAY_IP, LIMITED_BROADCAST_IP, NET_BROADCAST_IP):
            self._handle_dhcp(udp)
            return
        if ip.dst in (LIMITED_BROADCAST_IP, NET_BROADCAST_IP):
            self._drop("broadcast")
            return
        if ip.dst[0] >> 4 == 14:
            self._drop("multicast")             # 224.0.0.0/4: mDNS, SSDP and friends
            return
        if ip.dst == GATEWAY_IP and self._udp_forward_reply(udp):
            return
        if ip.dst == DNS_IP:
            if udp.dport == dns.DNS_PORT:
                self._handle_dns(src_mac, udp)
            else:
                self._drop("no_such_port")
            return
        if self.restrict:
            # XXX: guest forwards (QEMU guestfwd) will be the exception once they exist.
            self._drop("restricted")
            return
        self._relay_udp(src_mac, ip, udp)

    # ----------------------------------------------------------------- TCP

    def _handle_tcp(self, src_mac: bytes, ip) -> None:
        if self._tcp is None:
            self._drop("tcp")                   # the relay is off (UserNet(tcp=False))
            return
        seg = parse_tcp(ip)
        if ip.dst in (LIMITED_BROADCAST_IP, NET_BROADCAST_IP):
            self._drop("broadcast")
            return
        if ip.dst[0] >> 4 == 14:
            self._drop("multicast")
            return
        self._tcp.from_guest(src_mac, VIRTUAL_HOSTS.get(ip.dst, GATEWAY_MAC), ip.dst, seg)

    def _send_tcp(self, frame: bytes) -> None:
        self._tcp_frames += 1
        self._send(frame)

    def _tcp_policy(self, dst: bytes, port: int) -> str:
        """Where a guest connection to dst:port goes on the host, or "!" and
        the drop reason: the UDP relay's destination policy."""
        if dst == DNS_IP:
            return "!no_such_port"              # no DNS over TCP (yet)
        if self.restrict:
            return "!restricted"
        if dst == GATEWAY_IP:
            host = HOST_LOOPBACK
        elif _relay_denied(dst):
            return "!denied_destination"
        else:
            host = socket.inet_ntoa(dst)
        if self._allow_relay is not None and not self._allow_relay(host, port):
            return "!denied_destination"
        return host

    # -------------------------------------------------------- host forwards

    def _forward_event(self, listener: Listener) -> int:
        if listener.rule.proto == "tcp":
            self._accept(listener)
            return 0
        return self._receive_forwarded_udp(listener)

    def _accept(self, listener: Listener) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, _peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop("forward_accept_error")      # EMFILE and friends: try again later
                return
            if self._tcp is None or self.guest_mac is None:
                self._drop("forward_no_guest")
                tcp_relay.reset_socket(sock)
                continue
            self._tcp.open_inbound(sock, self.guest_mac, GATEWAY_MAC, GATEWAY_IP, listener.rule.guest_port)

    def _receive_forwarded_udp(self, listener: Listener) -> int:
        sent = 0
        for _ in range(RECV_BURST):
            try:
                payload, peer = listener.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop("udp_recv_error")
                break
            if self.guest_mac is None:
                self._drop("forward_no_guest")
                continue
            port = listener.udp_port_for(peer, self._clock())
            if port is None:
                self._drop("forward_no_port")
                continue
            sent += self._udp_to_guest(self.guest_mac, GATEWAY_IP, port, listener.rule.guest_port, payload)
        return sent

    def _udp_forward_reply(self, udp) -> bool:
        """A guest datagram to 10.0.2.2:PORT where PORT stands for a host peer
        of a UDP forward: it goes back to that peer. True if it was one."""
        for listener in self._listeners:
            if listener.rule.proto != "udp" or listener.rule.guest_port != udp.sport:
                continue
            peer = listener.port_peer.get(udp.dport)
            if peer is None:
                continue
            listener.last_used[udp.dport] = self._clock()
            try:
                listener.sock.sendto(udp.payload, peer)
            except OSError:
                self._drop("udp_send_error")
            return True
        return False

    @property
    def forward_ports(self) -> list[tuple[HostForward, int]]:
        """Each forward and the host port it is bound to (useful with port 0)."""
        return [(listener.rule, listener.port) for listener in self._listeners]

    # ---------------------------------------------------------------- DHCP

    def _handle_dhcp(self, udp) -> None:
        reply = dhcp.dhcp_reply(dhcp.parse_dhcp(udp.payload), server_ip=GATEWAY_IP, guest_ip=GUEST_IP,
                                netmask=NETMASK, dns_ip=DNS_IP)
        if reply is None:
            self._drop("dhcp_ignored")
            return
        self._send(build_ipv4_udp_frame(reply.dst_mac, GATEWAY_MAC, GATEWAY_IP, reply.dst_ip, dhcp.SERVER_PORT,
                                        dhcp.CLIENT_PORT, reply.payload, ident=self._next_ident()))

    # ----------------------------------------------------------------- DNS

    def _handle_dns(self, src_mac: bytes, udp) -> None:
        query = dns.parse_query(udp.payload)
        if query.opcode != 0 or query.qclass != dns.CLASS_IN:
            self._send_dns(src_mac, udp.sport, dns.build_response(query, dns.RCODE_NOTIMP))
            return
        name = query.hostname
        if name is None:
            self._send_dns(src_mac, udp.sport, dns.build_response(query, dns.RCODE_NXDOMAIN))
            return
        if len(self._dns_pending) >= MAX_DNS_PENDING:
            self._drop("dns_busy")
            return
        lookup = _DnsLookup(query, src_mac, udp.sport, self._dns_pool.submit(self._resolve, name))
        self._dns_pending.add(lookup)
        lookup.future.add_done_callback(lambda _f, lookup=lookup: self._dns_finished(lookup))

    def _dns_finished(self, lookup: _DnsLookup) -> None:
        # Runs on a worker thread: only a deque append (atomic) and a wakeup byte.
        self._dns_done.append(lookup)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass                                # the pipe is full: poll() is due anyway

    def _answer_dns(self, lookup: _DnsLookup) -> None:
        self._dns_pending.discard(lookup)
        query = lookup.query
        try:
            addresses = [socket.inet_aton(a) for a in lookup.future.result()]
        except Exception:   # noqa: BLE001 -- any resolver failure is the guest's SERVFAIL
            self._send_dns(lookup.guest_mac, lookup.guest_port, dns.build_response(query, dns.RCODE_SERVFAIL))
            return
        if not addresses:
            rcode, answers = dns.RCODE_NXDOMAIN, []
        elif query.qtype == dns.TYPE_A:
            rcode, answers = dns.RCODE_NOERROR, addresses
        else:
            # XXX: AAAA and other types get an empty answer: the name exists,
            # but this forwarder only knows IPv4 addresses.
            rcode, answers = dns.RCODE_NOERROR, []
        self._send_dns(lookup.guest_mac, lookup.guest_port, dns.build_response(query, rcode, answers))

    def _send_dns(self, guest_mac: bytes, guest_port: int, payload: bytes) -> None:
        self._send(build_ipv4_udp_frame(guest_mac, VIRTUAL_HOSTS[DNS_IP], DNS_IP, GUEST_IP, dns.DNS_PORT,
                                        guest_port, payload, ident=self._next_ident()))

    # ----------------------------------------------------------- UDP relay

    def _relay_udp(self, src_mac: bytes, ip, udp) -> None:
        if udp.dport == 0:
            self._drop("no_such_port")
            return
        if ip.dst == GATEWAY_IP:
            host = HOST_LOOPBACK
        elif _relay_denied(ip.dst):
            self._drop("denied_destination")
            return
        else:
            host = socket.inet_ntoa(ip.dst)
        if self._allow_relay is not None and not self._allow_relay(host, udp.dport):
            self._drop("denied_destination")
            return
        key = (udp.sport, ip.dst, udp.dport)
        now = self._clock()
        flow = self._udp_flows.get(key)
        if flow is None:
            if len(self._udp_flows) >= self.max_udp_flows:
                self._reap_udp(now)
            if len(self._udp_flows) >= self.max_udp_flows:
                self._drop("udp_flow_limit")
                return
            flow = self._open_udp_flow(key, src_mac, host, now)
            if flow is None:
                return
        flow.last_used = now
        flow.guest_mac = src_mac
        try:
            flow.sock.send(udp.payload)
        except BlockingIOError:
            self._drop("udp_send_blocked")      # host socket buffer full: UDP may drop
        except OSError:
            self._drop("udp_send_error")

    def _open_udp_flow(self, key, guest_mac: bytes, host: str, now: float) -> _UdpFlow | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # A connected socket only receives from the remote the guest
            # addressed: endpoint-dependent filtering, like a home router.
            sock.connect((host, key[2]))
        except OSError:
            sock.close()
            self._drop("udp_send_error")
            return None
        flow = _UdpFlow(sock, guest_mac, key[0], key[1], key[2], now)
        self._udp_flows[key] = flow
        self._selector.register(sock, selectors.EVENT_READ, flow)
        return flow

    def _close_udp_flow(self, flow: _UdpFlow) -> None:
        del self._udp_flows[(flow.guest_port, flow.remote_ip, flow.remote_port)]
        self._selector.unregister(flow.sock)
        flow.sock.close()

    def _reap_udp(self, now: float) -> None:
        for flow in [f for f in self._udp_flows.values() if now - f.last_used >= self.udp_idle_timeout]:
            self._close_udp_flow(flow)
        self._last_reap = now

    def _receive_udp(self, flow: _UdpFlow) -> int:
        sent = 0
        for _ in range(RECV_BURST):
            try:
                payload = flow.sock.recv(65535)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                # XXX: the remote port is closed; an ICMP port unreachable
                # (RFC 792) to the guest would save it a timeout.
                self._drop("udp_refused")
                continue
            except OSError:
                self._drop("udp_recv_error")
                break
            flow.last_used = self._clock()
            sent += self._udp_to_guest(flow.guest_mac, flow.remote_ip, flow.remote_port, flow.guest_port, payload)
        return sent

    def _udp_to_guest(self, guest_mac: bytes, src_ip: bytes, sport: int, dport: int, payload: bytes) -> int:
        """One datagram from a host socket to the guest, in IP fragments when
        it is larger than the link's MTU; returns the frames sent."""
        udp = build_udp(src_ip, GUEST_IP, sport, dport, payload)
        packets = fragments.build_ipv4_fragments(src_ip, GUEST_IP, IPPROTO_UDP, udp, ident=self._next_ident())
        for packet in packets:
            self._send(build_ethernet(guest_mac, GATEWAY_MAC, ETH_P_IP, packet))
        return len(packets)

    # ---------------------------------------------------------------- loop

    def poll(self, timeout: float = 0.0) -> int:
        """Deliver what the host side has for the guest; wait up to timeout
        seconds if nothing is ready. Returns the number of frames sent."""
        if self._closed:
            return 0
        sent = 0
        tcp_before = self._tcp_frames
        if self._dns_done:
            timeout = 0
        elif self._tcp is not None and (deadline := self._tcp.next_deadline()) is not None:
            timeout = max(0.0, min(timeout, deadline - self._clock()))
        for key, events in self._selector.select(timeout):
            if key.data is None:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            elif isinstance(key.data, _UdpFlow):
                sent += self._receive_udp(key.data)
            elif isinstance(key.data, Listener):
                sent += self._forward_event(key.data)
            else:
                self._tcp.host_event(key.data, events)
        while self._dns_done:
            self._answer_dns(self._dns_done.popleft())
            sent += 1
        now = self._clock()
        reap = now - self._last_reap >= REAP_INTERVAL
        if reap:
            self._reap_udp(now)
            self._fragments.expire(now)
            for listener in self._listeners:
                listener.reap(now, self.udp_idle_timeout)
        if self._tcp is not None:
            self._tcp.tick(now, reap)
        return sent + self._tcp_frames - tcp_before

    @property
    def udp_flow_count(self) -> int:
        return len(self._udp_flows)

    @property
    def tcp_conn_count(self) -> int:
        return len(self._tcp.conns) if self._tcp is not None else 0

    @property
    def tcp_buffered(self) -> int:
        """Bytes held for TCP in both directions over all connections."""
        if self._tcp is None:
            return 0
        return self._tcp.buffered + sum(len(c.to_host) for c in self._tcp.conns.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for flow in list(self._udp_flows.values()):
            self._close_udp_flow(flow)
        if self._tcp is not None:
            self._tcp.close()
        for listener in self._listeners:
            listener.sock.close()
        self._dns_pool.shutdown(wait=False, cancel_futures=True)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> UserNet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident
