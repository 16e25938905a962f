/* bench/cpu: six CPU-bound phases, one kind of work each.  run.py builds one
   ELF per phase (-DPHASE=n) so that each is timed on its own; PHASE=0 is the
   empty program whose run time is QEMU's start-up.  Each phase prints a
   checksum over the UART so that vmkit and QEMU can be compared.

   Phase 6 is built with -march=rv64gc and the others with -march=rv64g, so
   only phase 6 runs compressed (RVC) code.  No libc: bare metal, entered in
   M-mode by start.S.  Sizes (N_*) make each phase take 0.6-1 s under QEMU 7.2
   (on the 2-core host we measured on), long enough that the translator's
   compile latency does not dominate. */
#include <stdint.h>

#define UART ((volatile uint8_t *)0x10000000)

static void puthex(uint64_t v) {
    for (int i = 60; i >= 0; i -= 4) *UART = "0123456789abcdef"[(v >> i) & 15];
    *UART = '\n';
}

static uint64_t rng = 88172645463325252ull;
static inline uint64_t xorshift(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

#if PHASE == 1
/* Integer multiply and divide: mul, mulh, mulhu, div/divu/rem/remu and their
   32-bit forms, all with operands that change (no strength reduction). */
#define N_MULDIV 18000000
static uint64_t phase(void) {
    uint64_t sum = 0, x = 1;
    for (long i = 1; i <= N_MULDIV; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t d = (x >> 37) | 1;
        int64_t s = (int64_t)x, t = (int64_t)(i * 2654435761u) | 1;
        sum += x / d + x % (uint64_t)(i | 1);
        sum ^= (uint64_t)(s / t) + (uint64_t)(s % (t >> 5 | 1));
        sum += (uint64_t)(((__int128)s * (int64_t)sum) >> 64) ^ (uint64_t)(((unsigned __int128)x * d) >> 64);
        sum += (uint32_t)x / (uint32_t)(i | 1) + (uint64_t)((int32_t)(x >> 32) % (int32_t)(d | 3));
        sum ^= (uint32_t)sum * (uint32_t)d;
    }
    return sum;
}

#elif PHASE == 2
/* Table lookups: CRC32 (the 256-entry reflected table) over a 64 KiB buffer. */
#define N_CRC 2000
static uint32_t table[256];
static uint8_t buf[1 << 16];
static uint64_t phase(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    for (int i = 0; i < (int)sizeof buf; i++) buf[i] = (uint8_t)xorshift();
    uint64_t sum = 0;
    uint32_t c = 0xffffffff;
    for (int round = 0; round < N_CRC; round++) {
        for (int i = 0; i < (int)sizeof buf; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >> 8);
        sum = sum * 31 + ~c;
    }
    return sum;
}

#elif PHASE == 3
/* Floating point: 64x64 double matrix multiply (fmadd.d), C = A*B, repeated
   with inputs that depend on the round.  The checksum is over the bits of the
   results, so it also checks that rounding is exact. */
#define N_DGEMM 160
#define M 64
static double a[M][M], b[M][M], c[M][M];
static uint64_t phase(void) {
    uint64_t sum = 0;
    for (int round = 0; round < N_DGEMM; round++) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < M; j++) {
                a[i][j] = (i * 7 + j + round) * 0.25 - 3.0;
                b[i][j] = (i - j) * 0.5 + 1.0 / (j + round + 1);
            }
        for (int i = 0; i < M; i++)
            for (int j = 0; j < M; j++) {
                double s = 0;
                for (int k = 0; k < M; k++) s += a[i][k] * b[k][j];
                c[i][j] = s;
            }
        for (int i = 0; i < M; i++) {
            union { double d; uint64_t u; } v = { c[i][(i + round) % M] };
            sum = sum * 31 + v.u;
        }
    }
    return sum;
}

#elif PHASE == 4
/* Sorting: recursive quicksort (Hoare partition) of 64 Ki random words. */
#define N_SORT 60
#define LEN (1 << 16)
static uint32_t v[LEN];
static void quicksort(uint32_t *p, long lo, long hi) {
    if (lo >= hi) return;
    uint32_t pivot = p[lo + (hi - lo) / 2];
    long i = lo - 1, j = hi + 1;
    for (;;) {
        do i++; while (p[i] < pivot);
        do j--; while (p[j] > pivot);
        if (i >= j) break;
        uint32_t t = p[i]; p[i] = p[j]; p[j] = t;
    }
    quicksort(p, lo, j);
    quicksort(p, j + 1, hi);
}
static uint64_t phase(void) {
    uint64_t sum = 0;
    for (int round = 0; round < N_SORT; round++) {
        for (long i = 0; i < LEN; i++) v[i] = (uint32_t)xorshift();
        quicksort(v, 0, LEN - 1);
        for (long i = 1; i < LEN; i++) sum += v[i] < v[i - 1];     /* 0 when sorted */
        sum = sum * 31 + v[round * 1000] + v[LEN - 1 - round];
    }
    return sum;
}

#elif PHASE == 5
/* String and memory routines written as byte loops, called like libc's (no
   inlining: gcc would specialise them; run.py builds with -fno-builtin and
   -fno-tree-loop-distribute-patterns so that it does not call libc either). */
#define N_STR 2600
#define SIZE (1 << 14)
#define NOINLINE __attribute__((noinline))
static uint8_t src[SIZE], dst[SIZE], tmp[SIZE];
static NOINLINE void copy(uint8_t *d, const uint8_t *s, long n) { while (n--) *d++ = *s++; }
static NOINLINE void fill(uint8_t *d, int c, long n) { while (n--) *d++ = (uint8_t)c; }
static NOINLINE long length(const uint8_t *s) { const uint8_t *p = s; while (*p) p++; return p - s; }
static NOINLINE int compare(const uint8_t *a, const uint8_t *b) {
    while (*a && *a == *b) a++, b++;
    return *a - *b;
}
static uint64_t phase(void) {
    for (long i = 0; i < SIZE - 1; i++) src[i] = (uint8_t)(xorshift() % 255 + 1);  /* no NULs */
    uint64_t sum = 0;
    for (int round = 0; round < N_STR; round++) {
        long off = round * 37 % 512, n = SIZE - 1024 + round, at = round % 8;
        fill(dst, round + 1, SIZE - 1);
        copy(dst + at, src + off, n);
        sum += length(dst) + length(src + off);
        sum = sum * 31 + (uint64_t)compare(dst + at, src + off);   /* differ at byte n */
        copy(tmp, dst, SIZE);
        sum = sum * 31 + (uint64_t)compare(tmp, dst);              /* equal up to the NUL */
    }
    return sum;
}

#elif PHASE == 6
/* Compressed code: add-rotate-xor style mixing of a 64-bit word array in a
   loop that gcc emits almost entirely as 16-bit RVC instructions (c.ld,
   c.sd, c.add, c.xor, c.slli, c.srli, c.addi; run.py counts them in mix()
   with objdump).  It walks downwards so that the step fits c.addi. */
#define N_RVC 56000
#define WORDS 4096
static uint64_t w[WORDS];
static __attribute__((noinline)) uint64_t mix(uint64_t h) {
    for (long i = WORDS - 4; i >= 0; i -= 4) {
        uint64_t *p = w + i, a = p[0], b = p[1], c = p[2], d = p[3];
        a += b; d ^= a; c += d; b ^= c;
        a += h; h ^= b; c >>= 1; d <<= 3;
        h += d;
        p[0] = a; p[1] = b; p[2] = c; p[3] = d;
    }
    return h;
}
static uint64_t phase(void) {
    for (long i = 0; i < WORDS; i++) w[i] = xorshift();
    uint64_t sum = 0;
    for (int round = 0; round < N_RVC; round++) sum += mix(round);
    return sum;
}

#else
static uint64_t phase(void) { return 0; }
#endif

int main(void) {
#if PHASE
    puthex(phase());
#endif
    return 0;
}
