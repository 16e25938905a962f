/* netflood: a hostile guest for vmkit's user-mode network (tests/machine/test_net_hostile.py).
 *
 * Sends raw Ethernet frames on eth0 to the gateway's MAC through an AF_PACKET
 * socket, so the frames skip the guest kernel's own IP stack:
 *
 *   netflood malformed COUNT       COUNT frames cycling through malformed kinds
 *   netflood synflood COUNT PORT   COUNT well-formed TCP SYNs to 10.0.2.2:PORT,
 *                                  random source ports and sequence numbers
 *
 * Prints "sent N failed M": frames the kernel took, and ones it refused
 * (oversized frames get EMSGSIZE; that is expected and only counted).
 * Every frame is addressed to 10.0.2.2 (the host's loopback behind the NAT),
 * so nothing here can leave the machine.  Build:
 *   riscv64-linux-gnu-gcc -static -O2 -Wall netflood.c -o netflood
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const uint8_t GW_MAC[6] = {0x52, 0x55, 10, 0, 2, 2};
static const uint8_t GUEST_IP[4] = {10, 0, 2, 15}, GW_IP[4] = {10, 0, 2, 2}, DNS_IP[4] = {10, 0, 2, 3};
static uint8_t my_mac[6];
static int fd;
static struct sockaddr_ll dest;
static long sent, failed;
static uint8_t f[4096];                 /* the frame being built */

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)rng; }

static void put16(uint8_t *p, unsigned v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }

/* RFC 1071 one's-complement sum, folded; `sum` carries a pseudo-header. */
static unsigned csum(const uint8_t *p, int n, uint32_t sum) {
    for (int i = 0; i + 1 < n; i += 2) sum += p[i] << 8 | p[i + 1];
    if (n & 1) sum += p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return ~sum & 0xffff;
}

static void xmit(int len) {
    for (int tries = 0; ; tries++) {
        if (sendto(fd, f, len, 0, (struct sockaddr *)&dest, sizeof dest) == len) { sent++; return; }
        if (errno == ENOBUFS && tries < 100) { usleep(1000); continue; }   /* queue full: wait */
        failed++;
        return;
    }
}

/* Ethernet header: to the gateway, from us. Returns the payload. */
static uint8_t *eth(unsigned type) {
    memcpy(f, GW_MAC, 6);
    memcpy(f + 6, my_mac, 6);
    put16(f + 12, type);
    return f + 14;
}

/* A 20-byte IPv4 header with a correct checksum; returns the payload. */
static uint8_t *ip(const uint8_t *src, unsigned proto, int paylen, unsigned id, unsigned frag) {
    uint8_t *h = eth(0x0800);
    memset(h, 0, 20);
    h[0] = 0x45; put16(h + 2, 20 + paylen); put16(h + 4, id); put16(h + 6, frag);
    h[8] = 64; h[9] = proto;
    memcpy(h + 12, src, 4); memcpy(h + 16, GW_IP, 4);
    put16(h + 10, csum(h, 20, 0));
    return h + 20;
}

static void ip_fix_csum(void) { put16(f + 24, 0); put16(f + 24, csum(f + 14, (f[14] & 15) * 4, 0)); }

/* The TCP/UDP checksum over the pseudo-header (RFC 9293 3.1, RFC 768). */
static unsigned l4_csum(const uint8_t *seg, int len, unsigned proto) {
    const uint8_t *h = f + 14;
    uint32_t sum = (h[12] << 8 | h[13]) + (h[14] << 8 | h[15]) + (h[16] << 8 | h[17]) + (h[18] << 8 | h[19]);
    return csum(seg, len, sum + proto + len);
}

/* A UDP datagram to 10.0.2.2:dport with n payload bytes, checksummed. Returns the frame length. */
static int udp(const uint8_t *src, unsigned dport, int n) {
    uint8_t *u = ip(src, 17, 8 + n, rnd(), 0);
    put16(u, 1024 + rnd() % 60000); put16(u + 2, dport); put16(u + 4, 8 + n); put16(u + 6, 0);
    for (int i = 0; i < n; i++) u[8 + i] = rnd();
    put16(u + 6, l4_csum(u, 8 + n, 17));
    return 14 + 20 + 8 + n;
}

/* A TCP segment to 10.0.2.2:dport with flags and n payload bytes, checksummed. */
static int tcp(const uint8_t *src, unsigned dport, unsigned flags, int n) {
    uint8_t *t = ip(src, 6, 20 + n, rnd(), 0x4000);
    memset(t, 0, 20);
    put16(t, 1024 + rnd() % 60000); put16(t + 2, dport); put32(t + 4, rnd()); put32(t + 8, rnd());
    t[12] = 5 << 4; t[13] = flags; put16(t + 14, 64240);
    for (int i = 0; i < n; i++) t[20 + i] = rnd();
    put16(t + 16, l4_csum(t, 20 + n, 6));
    return 14 + 20 + 20 + n;
}

static void fragment(unsigned id, unsigned off8, int mf, int n) {
    uint8_t *p = ip(GUEST_IP, 17, n, id, (mf ? 0x2000 : 0) | off8);
    for (int i = 0; i < n; i++) p[i] = rnd();
    xmit(14 + 20 + n);
}

#define NKINDS 26

static void malformed(long k) {
    uint8_t *h = f + 14;
    int len, port = 1 + rnd() % 65535;
    switch (k % NKINDS) {
    case 0: eth(0x0800); xmit(1 + rnd() % 13); break;                 /* runt: shorter than Ethernet */
    case 1: eth(0x0800); xmit(14 + rnd() % 20); break;                /* truncated IPv4 header, < 60 */
    case 2: len = udp(GUEST_IP, port, 8); h[0] = 0x40 | rnd() % 5; ip_fix_csum(); xmit(len); break;  /* IHL < 5 */
    case 3: len = udp(GUEST_IP, port, 0); h[0] = 0x4f; ip_fix_csum(); xmit(len); break;   /* IHL past the frame */
    case 4: len = udp(GUEST_IP, port, 8); put16(h + 2, 1400 + rnd() % 64000); ip_fix_csum(); xmit(len); break;
    case 5: len = udp(GUEST_IP, port, 32); put16(h + 2, rnd() % 30); ip_fix_csum(); xmit(len); break;
    case 6: len = udp(GUEST_IP, port, 16); put16(h + 10, ~(h[10] << 8 | h[11])); xmit(len); break;  /* bad IP csum */
    case 7: len = udp(GUEST_IP, port, 16); h[0] = (rnd() % 16) << 4 | 5; if (h[0] >> 4 == 4) h[0] = 0x65;
            ip_fix_csum(); xmit(len); break;                             /* bad version */
    case 8: len = udp(GUEST_IP, port, 16); put16(h + 24, rnd() % 8 ? 8 + 16 + 1 + rnd() % 100 : rnd() % 8);
            xmit(len); break;                                            /* UDP length wrong */
    case 9: len = udp(GUEST_IP, port, 16); h[27] ^= 0x5a; xmit(len); break;   /* UDP checksum wrong */
    case 10: len = tcp(GUEST_IP, port, 0x02, 0); h[32] = (rnd() % 5) << 4; xmit(len); break;   /* data offset < 5 */
    case 11: len = tcp(GUEST_IP, port, 0x02, 4); h[32] = 15 << 4; xmit(len); break;  /* offset past the segment */
    case 12: len = tcp(GUEST_IP, port, 0x02, 8); h[36] ^= 0xa5; xmit(len); break;   /* TCP checksum wrong */
    case 13: len = tcp(GUEST_IP, port, 0x02, 4); h[32] = 6 << 4; h[40] = 2; h[41] = 9;   /* bad MSS option */
             put16(h + 36, 0); put16(h + 36, l4_csum(h + 20, 24, 6)); xmit(len); break;
    case 14: len = tcp(GUEST_IP, 0, 0x02, 0); xmit(len); break;                       /* TCP to port 0 */
    case 15: { unsigned id = rnd();                    /* overlapping fragments, then the final one */
             fragment(id, 0, 1, 800); fragment(id, 50, 1, 800); fragment(id, 10, 1, 96); fragment(id, 200, 0, 64);
             break; }
    case 16: fragment(rnd(), 8 * (rnd() % 100), 1, 8 * (1 + rnd() % 150)); break;   /* never completed */
    case 17: fragment(rnd(), 8191, 0, 1000); break;                  /* ends past 65535 bytes */
    case 18: { uint8_t *a = eth(0x0806); memset(a, 0, 28);          /* ARP with bad lengths */
             put16(a, 1); put16(a + 2, 0x0800); a[4] = rnd() % 16; a[5] = rnd() % 16; put16(a + 6, 1);
             if (a[4] == 6) a[4] = 7;
             memcpy(a + 8, my_mac, 6); memcpy(a + 14, GUEST_IP, 4); memcpy(a + 24, GW_IP, 4);
             xmit(14 + (rnd() % 2 ? 28 : rnd() % 28)); break; }
    case 19: { uint8_t *p = eth(0x86dd); int n = rnd() % 200;       /* IPv6 EtherType, garbage inside */
             for (int i = 0; i < n; i++) p[i] = rnd();
             xmit(14 + n); break; }
    case 20: len = udp(GUEST_IP, port, 16); f[6] |= 1; if (rnd() % 2) memset(f + 6, 0xff, 6);
             xmit(len); break;                                           /* multicast/broadcast source MAC */
    case 21: { static const uint8_t srcs[][4] = {{10, 0, 2, 99}, {127, 0, 0, 1}, {10, 0, 2, 2}, {8, 8, 8, 8},
                                                 {255, 255, 255, 255}, {224, 0, 0, 1}};
             const uint8_t *src = srcs[rnd() % 6];              /* spoofed sources, otherwise well formed */
             xmit(rnd() % 2 ? udp(src, port, 16) : tcp(src, port, 0x02, 0)); break; }
    case 22: len = udp(GUEST_IP, port, 1472); xmit(1514 + rnd() % 2500); break;    /* oversized frames */
    case 23: { eth(rnd()); int n = 14 + rnd() % 1500;               /* random garbage */
             for (int i = 12; i < n; i++) f[i] = rnd();
             xmit(n); break; }
    case 24: { uint8_t *p = eth(rnd() % 0x600); int n = rnd() % 100;   /* an 802.3 length, not a type */
             for (int i = 0; i < n; i++) p[i] = rnd();
             xmit(14 + n); break; }
    case 25: len = udp(GUEST_IP, 53, 12); memcpy(h + 16, DNS_IP, 4); ip_fix_csum();   /* DNS junk */
             put16(h + 26, 0); put16(h + 26, l4_csum(h + 20, 20, 17)); xmit(len); break;
    }
}

static void synflood(unsigned port) {
    int len = tcp(GUEST_IP, port, 0x02, 0);     /* one SYN; then new ports, sequence numbers, checksums */
    uint8_t *h = f + 14, *t = h + 20;
    put16(t, 1024 + rnd() % 64512);
    put16(h + 4, rnd()); ip_fix_csum();
    put32(t + 4, rnd()); put16(t + 16, 0); put16(t + 16, l4_csum(t, 20, 6));
    xmit(len);
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "malformed") && (strcmp(argv[1], "synflood") || argc < 4))) {
        fprintf(stderr, "usage: netflood malformed COUNT | netflood synflood COUNT PORT\n");
        return 2;
    }
    long count = atol(argv[2]);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rng ^= (uint64_t)ts.tv_nsec << 20 ^ (uint64_t)getpid();
    /* Protocol 0: this socket only sends, it never receives a copy of the traffic. */
    fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) { perror("socket(AF_PACKET)"); return 1; }
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "eth0");
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("SIOCGIFHWADDR eth0"); return 1; }
    memcpy(my_mac, ifr.ifr_hwaddr.sa_data, 6);
    dest.sll_family = AF_PACKET;
    dest.sll_ifindex = if_nametoindex("eth0");
    dest.sll_halen = 6;
    memcpy(dest.sll_addr, GW_MAC, 6);
    for (long i = 0; i < count; i++) {
        if (!strcmp(argv[1], "malformed")) malformed(i);
        else synflood(atoi(argv[3]));
    }
    printf("sent %ld failed %ld\n", sent, failed);
    return 0;
}
