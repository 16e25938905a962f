/* Virtual memory: Sv39 and Sv48 (Privileged ISA 1.12, 4.3-4.5).
 *
 * Page tables are built here in RAM: 4 KiB pages, 2 MiB and 1 GiB
 * superpages (and a 512 GiB Sv48 leaf), misaligned superpages (4.3.2 step
 * 6: page fault), non-canonical addresses, V/R/W/X permissions incl. the
 * reserved W-without-R encodings, the U bit with mstatus.SUM (S may never
 * execute U pages), mstatus.MXR, A/D bits, SFENCE.VMA after a PTE change,
 * page faults delegated to S (stval = address), and mstatus.MPRV with
 * MPP = S / U for M-mode loads and stores.  Each fault checks its cause
 * (12 fetch, 13 load, 15 store/AMO) and mtval/stval (the faulting address).
 *
 * The address spaces used by S/U code identity-map 0-1 GiB (devices) and
 * 2-3 GiB (RAM, this program) with gigapages, so the runtime keeps working.
 *
 * QEMU 7.2 choices encoded (spec: either is allowed):
 *  - the hart sets PTE.A and PTE.D itself instead of raising page faults
 *    (4.3.1 "Svadu-like" behaviour; Svade would fault);
 *  - 16-bit ASIDs (not used for matching here).
 * Not tested: Sv57, which QEMU 7.2 also implements.
 */
#include "test.h"

#define PTE_V (1ull << 0)
#define PTE_R (1ull << 1)
#define PTE_W (1ull << 2)
#define PTE_X (1ull << 3)
#define PTE_U (1ull << 4)
#define PTE_G (1ull << 5)
#define PTE_A (1ull << 6)
#define PTE_D (1ull << 7)
#define PTE_RWX (PTE_R | PTE_W | PTE_X)
#define SATP_SV39 (8ull << 60)
#define SATP_SV48 (9ull << 60)

#define PAGE 4096ull
#define MEGA (1ull << 21)
#define GIGA (1ull << 30)

/* Virtual addresses of the test mappings (all canonical for Sv39). */
#define VA_4K     0x40000000ull         /* 4 KiB pages, one per test page */
#define VA_2M     0x40200000ull         /* 2 MiB page -> PA_2M */
#define VA_2M_BAD 0x40400000ull         /* 2 MiB page, misaligned PPN */
#define VA_1G     0x100000000ull        /* 1 GiB page -> 0x80000000 */
#define VA_1G_BAD 0x140000000ull        /* 1 GiB page, misaligned PPN */
#define PA_2M     0x80400000ull         /* beyond this program's image */

static uint64_t pool[48][512] __attribute__((aligned(4096)));
static int pool_used;
static uint8_t pages[8][4096] __attribute__((aligned(4096)));

/* A function alone in its page, executed through a mapping at VA_4K + 7 pages */
__attribute__((aligned(4096), noinline, section(".text.exec_page")))
uint64_t exec_target(void)
{
        return 0xc0de;
}

static uint64_t *pt_alloc(void)
{
        uint64_t *t = pool[pool_used++];
        CHECK(pool_used <= 48, 1);
        for (int i = 0; i < 512; i++)
                t[i] = 0;
        return t;
}

static uint64_t pte_leaf(uint64_t pa, uint64_t flags)
{
        return ((pa >> 12) << 10) | flags | PTE_V;
}

/* Install a leaf for va at `level` (0 = 4K, 1 = 2M, 2 = 1G, 3 = 512G) in a
 * `levels`-level table; returns the PTE's address. */
static volatile uint64_t *map(uint64_t *root, int levels, uint64_t va,
                              uint64_t pa, int level, uint64_t flags)
{
        uint64_t *t = root;
        for (int l = levels - 1; l > level; l--) {
                uint64_t idx = (va >> (12 + 9 * l)) & 511;
                if (!(t[idx] & PTE_V))
                        t[idx] = (((uint64_t)pt_alloc() >> 12) << 10) | PTE_V;
                t = (uint64_t *)((t[idx] >> 10) << 12);
        }
        uint64_t idx = (va >> (12 + 9 * level)) & 511;
        t[idx] = pte_leaf(pa, flags);
        return &t[idx];
}

/* Devices and RAM identity-mapped with gigapages, for S (or U) code. */
static uint64_t *new_space(int levels, uint64_t user)
{
        uint64_t *root = pt_alloc();
        map(root, levels, 0, 0, 2, PTE_R | PTE_W | PTE_A | PTE_D | user);
        map(root, levels, 0x80000000, 0x80000000, 2, PTE_RWX | PTE_A | PTE_D | user);
        return root;
}

static void set_satp(uint64_t mode, uint64_t *root)
{
        csr_write(satp, mode | ((uint64_t)root >> 12));
        asm volatile ("sfence.vma" ::: "memory");
}

static uint64_t phys_read(uint64_t pa)
{
        return *(volatile uint64_t *)pa;
}

#define EXPECT_FAULT(cause_, va_, access) do { \
        trap_arm(); \
        access; \
        CHECK_TRAP(cause_); \
        CHECK(trap_tval, (uint64_t)(va_)); \
} while (0)
#define LOAD(va)       (*(volatile uint64_t *)(uint64_t)(va))
#define STORE(va, v)   (*(volatile uint64_t *)(uint64_t)(va) = (v))
#define EXPECT_LOAD_FAULT(va)  EXPECT_FAULT(CAUSE_LOAD_PAGE_FAULT, va, (void)LOAD(va))
#define EXPECT_STORE_FAULT(va) EXPECT_FAULT(CAUSE_STORE_PAGE_FAULT, va, STORE(va, 0))
#define EXPECT_AMO_FAULT(va)   EXPECT_FAULT(CAUSE_STORE_PAGE_FAULT, va, \
        asm volatile ("amoadd.d zero, zero, (%0)" :: "r"(va) : "memory"))
#define EXPECT_FETCH_FAULT(va) do { \
        EXPECT_FAULT(CAUSE_FETCH_PAGE_FAULT, va, ((uint64_t (*)(void))(va))()); \
        CHECK(trap_epc, (uint64_t)(va)); \
} while (0)

static uint64_t va_page(int i)
{
        return VA_4K + i * PAGE;
}

/* ---------------------------------------------------------------- Sv39 */
static volatile uint64_t *pte_page[8];
static uint64_t *sv39_root;

static void build_sv39(void)
{
        uint64_t *root = sv39_root = new_space(3, 0);
        uint64_t rw = PTE_R | PTE_W | PTE_A | PTE_D;
        pte_page[0] = map(root, 3, va_page(0), (uint64_t)pages[0], 0, rw);
        pte_page[1] = map(root, 3, va_page(1), (uint64_t)pages[1], 0, PTE_R | PTE_A);
        pte_page[2] = map(root, 3, va_page(2), (uint64_t)pages[2], 0, PTE_X | PTE_A);
        pte_page[3] = map(root, 3, va_page(3), (uint64_t)pages[3], 0, rw | PTE_U);
        pte_page[4] = map(root, 3, va_page(4), (uint64_t)pages[4], 0, PTE_R | PTE_W);  /* A=D=0 */
        pte_page[5] = map(root, 3, va_page(5), (uint64_t)pages[5], 0, PTE_W | PTE_A | PTE_D);  /* reserved */
        pte_page[6] = map(root, 3, va_page(6), (uint64_t)pages[6], 0, 0);  /* V = 0 below */
        *pte_page[6] = 0;
        uint64_t exec_pa = (uint64_t)exec_target;
        pte_page[7] = map(root, 3, va_page(7), exec_pa, 0, PTE_X | PTE_R | PTE_A);
        map(root, 3, va_page(8), exec_pa, 0, PTE_X | PTE_A | PTE_U);   /* U code */
        map(root, 3, va_page(9), exec_pa, 0, PTE_R | PTE_W | PTE_A | PTE_D);  /* no X */
        map(root, 3, VA_2M, PA_2M, 1, rw);
        map(root, 3, VA_2M_BAD, PA_2M + PAGE, 1, rw);
        map(root, 3, VA_1G, 0x80000000, 2, rw);
        map(root, 3, VA_1G_BAD, 0x80000000 + MEGA, 2, rw);
}

static uint64_t s_sv39_basic(uint64_t arg)
{
        /* 4 KiB page */
        STORE(va_page(0) + 8, 0x1111);
        CHECK(LOAD(va_page(0) + 8), 0x1111);
        /* 2 MiB page: the page offset is 21 bits */
        STORE(VA_2M + 0x12340, 0x2222);
        CHECK(LOAD(VA_2M + 0x12340), 0x2222);
        /* 1 GiB page onto RAM: same bytes as the 4 KiB mapping */
        CHECK(LOAD(VA_1G + ((uint64_t)pages[0] - 0x80000000) + 8), 0x1111);
        STORE(VA_1G + (PA_2M - 0x80000000) + 0x12348, 0x3333);
        /* executing through a mapping */
        CHECK(((uint64_t (*)(void))va_page(7))(), 0xc0de);
        return 0;
}

static uint64_t s_sv39_faults(uint64_t arg)
{
        /* misaligned superpages (4.3.2 step 6) */
        EXPECT_LOAD_FAULT(VA_2M_BAD);
        EXPECT_STORE_FAULT(VA_2M_BAD + 0x1000);
        EXPECT_LOAD_FAULT(VA_1G_BAD + 0x123458);
        /* unmapped / invalid */
        EXPECT_LOAD_FAULT(va_page(6));
        EXPECT_LOAD_FAULT(va_page(20));
        EXPECT_STORE_FAULT(0x3000000000ull);    /* no level-2 entry */
        /* non-canonical: bits 63:39 must equal bit 38 */
        EXPECT_LOAD_FAULT(0x4000000000ull);
        EXPECT_STORE_FAULT(0xffffff0000000000ull ^ (1ull << 40));
        /* R only: store and AMO fault */
        CHECK(LOAD(va_page(1)), 0);
        EXPECT_STORE_FAULT(va_page(1) + 16);
        EXPECT_AMO_FAULT(va_page(1) + 24);
        /* X only: load faults unless MXR */
        EXPECT_LOAD_FAULT(va_page(2) + 8);
        csr_set(sstatus, MSTATUS_MXR);
        CHECK(LOAD(va_page(2) + 8), 0x5a5a);
        csr_clear(sstatus, MSTATUS_MXR);
        EXPECT_STORE_FAULT(va_page(2));
        /* W without R is reserved: every access faults */
        EXPECT_LOAD_FAULT(va_page(5));
        EXPECT_STORE_FAULT(va_page(5));
        /* fetch from a page without X */
        EXPECT_FETCH_FAULT(va_page(9));
        EXPECT_FETCH_FAULT(va_page(0));
        return 0;
}

static uint64_t s_sv39_user_pages(uint64_t arg)
{
        /* SUM = 0: S may not touch U pages */
        csr_clear(sstatus, MSTATUS_SUM);
        EXPECT_LOAD_FAULT(va_page(3));
        EXPECT_STORE_FAULT(va_page(3) + 8);
        csr_set(sstatus, MSTATUS_SUM);
        STORE(va_page(3) + 8, 0x4444);
        CHECK(LOAD(va_page(3) + 8), 0x4444);
        /* S can never execute from a U page, SUM or not */
        EXPECT_FETCH_FAULT(va_page(8));
        csr_clear(sstatus, MSTATUS_SUM);
        return 0;
}

static uint64_t s_sv39_accessed_dirty(uint64_t arg)
{
        (void)LOAD(va_page(4));
        return 0;
}

static uint64_t s_sv39_store(uint64_t arg)
{
        STORE(arg, 0x5555);
        return 0;
}

static uint64_t s_load(uint64_t va)
{
        return LOAD(va);
}

static void test_sv39(void)
{
        build_sv39();
        *(volatile uint64_t *)&pages[2][8] = 0x5a5a;
        set_satp(SATP_SV39, sv39_root);
        run_in_mode(PRV_S, s_sv39_basic, 0);
        CHECK(phys_read(PA_2M + 0x12340), 0x2222);
        CHECK(phys_read(PA_2M + 0x12348), 0x3333);
        run_in_mode(PRV_S, s_sv39_faults, 0);
        run_in_mode(PRV_S, s_sv39_user_pages, 0);
        CHECK(trap_from, PRV_S);

        /* A and D: set by the hart on first access / first store */
        CHECK(*pte_page[4] & (PTE_A | PTE_D), 0);
        run_in_mode(PRV_S, s_sv39_accessed_dirty, 0);
        CHECK(*pte_page[4] & (PTE_A | PTE_D), PTE_A);
        run_in_mode(PRV_S, s_sv39_store, va_page(4));
        CHECK(*pte_page[4] & (PTE_A | PTE_D), PTE_A | PTE_D);
        CHECK(phys_read((uint64_t)pages[4]), 0x5555);

        /* SFENCE.VMA after remapping a page */
        *(volatile uint64_t *)&pages[0][0] = 0xaaaa;
        *(volatile uint64_t *)&pages[1][0] = 0xbbbb;
        CHECK(run_in_mode(PRV_S, s_load, va_page(0)), 0xaaaa);
        *pte_page[0] = pte_leaf((uint64_t)pages[1], PTE_R | PTE_W | PTE_A | PTE_D);
        asm volatile ("sfence.vma" ::: "memory");
        CHECK(run_in_mode(PRV_S, s_load, va_page(0)), 0xbbbb);
        /* and with an address operand */
        *pte_page[0] = pte_leaf((uint64_t)pages[0], PTE_R | PTE_W | PTE_A | PTE_D);
        asm volatile ("sfence.vma %0, zero" :: "r"(va_page(0)) : "memory");
        CHECK(run_in_mode(PRV_S, s_load, va_page(0)), 0xaaaa);

        /* page faults delegated to S: stval, scause, sepc */
        csr_write(medeleg, (1 << CAUSE_LOAD_PAGE_FAULT) | (1 << CAUSE_STORE_PAGE_FAULT));
        trap_arm();
        run_in_mode(PRV_S, s_load, va_page(6) + 0x10);
        CHECK_TRAP(CAUSE_LOAD_PAGE_FAULT);
        CHECK(trap_handled_in, PRV_S);
        CHECK(trap_tval, va_page(6) + 0x10);
        csr_write(medeleg, 0);
        csr_write(satp, 0);
}

/* ---------------------------------------------------------------- U mode */
static uint64_t u_code(uint64_t arg)
{
        /* running from a U page (RAM mapped with U = 1) */
        STORE(arg, 0x6666);
        CHECK(LOAD(arg), 0x6666);
        CHECK(((uint64_t (*)(void))va_page(8))(), 0xc0de);     /* U + X */
        EXPECT_LOAD_FAULT(va_page(0));                           /* not U */
        EXPECT_STORE_FAULT(va_page(0));
        EXPECT_FETCH_FAULT(va_page(7));
        return 0;
}

static void test_user(void)
{
        uint64_t *root = new_space(3, PTE_U);
        uint64_t rw = PTE_R | PTE_W | PTE_A | PTE_D;
        map(root, 3, va_page(0), (uint64_t)pages[0], 0, rw);
        map(root, 3, va_page(3), (uint64_t)pages[3], 0, rw | PTE_U);
        map(root, 3, va_page(7), (uint64_t)exec_target, 0, PTE_X | PTE_A);
        map(root, 3, va_page(8), (uint64_t)exec_target, 0, PTE_X | PTE_A | PTE_U);
        set_satp(SATP_SV39, root);
        run_in_mode(PRV_U, u_code, va_page(3) + 16);
        CHECK(trap_from, PRV_U);
        csr_write(satp, 0);
        CHECK(phys_read((uint64_t)pages[3] + 16), 0x6666);
}

/* ---------------------------------------------------------------- MPRV */
/* A load with MPRV = 1 and the given MPP, all in registers: with MPP = U
 * even the stack would be inaccessible. */
static uint64_t mprv_load(uint64_t va, uint64_t mpp, uint64_t extra)
{
        uint64_t v = 0xdead;
        uint64_t bits = MSTATUS_MPRV | (mpp << MSTATUS_MPP_SHIFT) | extra;
        asm volatile ("csrc mstatus, %[mpp]\n"
                      "csrs mstatus, %[bits]\n"
                      "ld   %[v], 0(%[va])\n"
                      "csrc mstatus, %[bits]\n"
                      : [v] "+r"(v)
                      : [va] "r"(va), [bits] "r"(bits), [mpp] "r"((uint64_t)MSTATUS_MPP)
                      : "memory");
        return v;
}

static void mprv_store(uint64_t va, uint64_t mpp, uint64_t value)
{
        uint64_t bits = MSTATUS_MPRV | (mpp << MSTATUS_MPP_SHIFT);
        asm volatile ("csrc mstatus, %[mpp]\n"
                      "csrs mstatus, %[bits]\n"
                      "sd   %[value], 0(%[va])\n"
                      "csrc mstatus, %[bits]\n"
                      :: [va] "r"(va), [bits] "r"(bits), [value] "r"(value),
                         [mpp] "r"((uint64_t)MSTATUS_MPP)
                      : "memory");
}

static void test_mprv(void)
{
        set_satp(SATP_SV39, sv39_root);
        *(volatile uint64_t *)&pages[0][0] = 0x7777;
        *(volatile uint64_t *)&pages[3][0] = 0x8888;
        /* MPP = M: no translation even with MPRV */
        CHECK(mprv_load((uint64_t)pages[0], PRV_M, 0), 0x7777);
        /* MPP = S: translated with S permissions */
        CHECK(mprv_load(va_page(0), PRV_S, 0), 0x7777);
        mprv_store(va_page(0) + 8, PRV_S, 0x9999);
        CHECK(*(volatile uint64_t *)&pages[0][8], 0x9999);
        trap_arm();
        CHECK(mprv_load(va_page(3), PRV_S, 0), 0xdead);        /* U page, SUM = 0 */
        CHECK_TRAP(CAUSE_LOAD_PAGE_FAULT);
        CHECK(trap_tval, va_page(3));
        CHECK(trap_from, PRV_M);
        CHECK(mprv_load(va_page(3), PRV_S, MSTATUS_SUM), 0x8888);
        trap_arm();
        mprv_store(va_page(1), PRV_S, 1);                        /* read-only */
        CHECK_TRAP(CAUSE_STORE_PAGE_FAULT);
        CHECK(trap_tval, va_page(1));
        CHECK(mprv_load(va_page(2) + 8, PRV_S, MSTATUS_MXR), 0x5a5a);
        /* MPP = U: only U pages */
        CHECK(mprv_load(va_page(3), PRV_U, 0), 0x8888);
        trap_arm();
        CHECK(mprv_load(va_page(0), PRV_U, 0), 0xdead);
        CHECK_TRAP(CAUSE_LOAD_PAGE_FAULT);
        csr_write(satp, 0);
        csr_clear(mstatus, MSTATUS_MPP | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR);
}

/* ---------------------------------------------------------------- Sv48 */
#define VA48_4K   0x8000000000ull       /* VPN[3] = 1: beyond Sv39 */
#define VA48_2M   0x8000200000ull
#define VA48_512G 0x10000000000ull      /* VPN[3] = 2: a 512 GiB leaf at PA 0 */

static uint64_t s_sv48(uint64_t arg)
{
        STORE(VA48_4K + 0x10, 0xabab);
        CHECK(LOAD(VA48_4K + 0x10), 0xabab);
        STORE(VA48_2M + 0x1008, 0xcdcd);
        CHECK(LOAD(VA48_2M + 0x1008), 0xcdcd);
        CHECK(LOAD(VA48_512G + (uint64_t)pages[5]), 0xefef);
        /* bits 63:48 must equal bit 47 */
        EXPECT_LOAD_FAULT(0x0000800000000000ull);
        EXPECT_STORE_FAULT(0x7fff000000000000ull);
        EXPECT_LOAD_FAULT(VA48_4K + PAGE);
        /* a misaligned 512 GiB leaf */
        EXPECT_LOAD_FAULT(0x18000000000ull);
        return 0;
}

static void test_sv48(void)
{
        uint64_t *root = new_space(4, 0);
        uint64_t rw = PTE_R | PTE_W | PTE_A | PTE_D;
        map(root, 4, VA48_4K, (uint64_t)pages[6], 0, rw);
        map(root, 4, VA48_2M, PA_2M, 1, rw);
        map(root, 4, VA48_512G, 0, 3, rw);
        map(root, 4, 0x18000000000ull, GIGA, 3, rw);
        *(volatile uint64_t *)&pages[5][0] = 0xefef;
        set_satp(SATP_SV48, root);
        run_in_mode(PRV_S, s_sv48, 0);
        csr_write(satp, 0);
        CHECK(phys_read((uint64_t)pages[6] + 0x10), 0xabab);
        CHECK(phys_read(PA_2M + 0x1008), 0xcdcd);
}

int main(void)
{
        extern char _end[];
        CHECK((uint64_t)_end < PA_2M, 1);
        test_sv39();
        test_user();
        test_mprv();
        test_sv48();
        return 0;
}
