/* A CPU-bound mix for bench/cpu: integer hashing, memory traffic, branches,
   and double-precision arithmetic.  Prints a checksum over the UART so the
   result can be compared between vmkit and QEMU. */
#include <stdint.h>

#define UART ((volatile uint8_t *)0x10000000)

static void putc_(char c) { *UART = c; }
static void puthex(uint64_t v) {
    for (int i = 60; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
    putc_('\n');
}

static uint8_t buf[1 << 16];
static uint32_t table[256];
static double mat_a[32][32], mat_b[32][32], mat_c[32][32];
static uint8_t sieve[1 << 17];

static uint32_t crc32(const uint8_t *p, int n) {
    uint32_t c = 0xffffffff;
    for (int i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return ~c;
}

static void sort(uint32_t *a, int n) {          /* insertion+shell sort: branches */
    for (int gap = n / 2; gap > 0; gap /= 2)
        for (int i = gap; i < n; i++) {
            uint32_t t = a[i]; int j = i;
            while (j >= gap && a[j - gap] > t) { a[j] = a[j - gap]; j -= gap; }
            a[j] = t;
        }
}

int main(void) {
    uint64_t sum = 0, x = 88172645463325252ull;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < (int)sizeof buf; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; buf[i] = (uint8_t)x; }
        sum += crc32(buf, sizeof buf);
        sort((uint32_t *)buf, sizeof buf / 4);
        sum += ((uint32_t *)buf)[100];
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++) { mat_a[i][j] = (i * 7 + j + round) * 0.25; mat_b[i][j] = (i - j) * 0.5 + 1.0 / (j + 1); }
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++) {
                double s = 0;
                for (int k = 0; k < 32; k++) s += mat_a[i][k] * mat_b[k][j];
                mat_c[i][j] = s;
            }
        sum += (uint64_t)(int64_t)(mat_c[round][5] * 1000.0);
        for (int i = 0; i < (int)sizeof sieve; i++) sieve[i] = 1;
        int primes = 0;
        for (int i = 2; i < (int)sizeof sieve; i++)
            if (sieve[i]) { primes++; for (int j = 2 * i; j < (int)sizeof sieve; j += i) sieve[j] = 0; }
        sum += primes * 31 + (uint64_t)(x % 1000003) * 17 / 3;
    }
    puthex(sum);
    return 0;
}
