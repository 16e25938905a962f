/* Loads and stores that straddle a page boundary, in hot loops, where the
 * two virtual pages map to physical pages that are not adjacent.
 *
 * RISC-V allows misaligned loads and stores (Unprivileged ISA 20191213,
 * 2.6); vmkit performs them, as QEMU does.  An access of 2, 4 or 8 bytes
 * whose last byte lies in the next page must not be taken as a TLB hit on
 * the first page by translated code (ir.tlb_check compares the tag of the
 * access's last byte): it leaves for the interpreter, which does it byte by
 * byte through both mappings.  Here VA_LO and VA_LO + 4096 map (Sv39,
 * Privileged ISA 4.3) to the physical pages phys[2] and phys[0], so a tier
 * that took the straddling access as one host access would read and write
 * phys[3] instead.  Every offset from 12 bytes before the boundary to 4
 * after it is stored to and loaded back, 200 rounds in S-mode (hot:
 * translated by any tier), and checksums of what was loaded and of all
 * three physical pages are printed for the comparison with QEMU.
 */
#include "sv39.h"

#define VA_LO 0x40000000ull            /* two 4 KiB pages: VA_LO, VA_LO + 4096 */

static uint8_t phys[4][4096] __attribute__((aligned(4096)));
static uint64_t loaded;

static uint64_t __attribute__((noinline)) round_trip(uint8_t *p, uint64_t v)
{
        uint64_t sum = 0;
        *(volatile uint64_t *)p = v;
        sum += *(volatile uint64_t *)p;
        *(volatile uint32_t *)(p + 1) = (uint32_t)(v >> 7);
        sum += *(volatile uint32_t *)(p + 1);
        sum += *(volatile int32_t *)(p + 2);
        *(volatile uint16_t *)(p + 3) = (uint16_t)(v >> 13);
        sum += *(volatile uint16_t *)(p + 3);
        sum += *(volatile int16_t *)(p + 5);
        return sum ^ (sum << 3);
}

static uint64_t s_main(uint64_t arg)
{
        uint8_t *boundary = (uint8_t *)(VA_LO + 4096);
        uint64_t sum = 0, v = arg;
        for (int round = 0; round < 200; round++) {
                for (int off = -12; off <= 4; off++) {
                        v = v * 6364136223846793005ull + 1442695040888963407ull;
                        sum += round_trip(boundary + off, v);
                }
        }
        loaded = sum;
        return 0;
}

static uint64_t page_sum(const uint8_t *page)
{
        uint64_t h = 0;
        for (int i = 0; i < 4096; i++)
                h = h * 31 + page[i];
        return h;
}

int main(void)
{
        uint64_t *root = sv39_space();
        sv39_map_4k(root, VA_LO, (uint64_t)phys[2], PTE_R | PTE_W | PTE_A | PTE_D);
        sv39_map_4k(root, VA_LO + 4096, (uint64_t)phys[0], PTE_R | PTE_W | PTE_A | PTE_D);
        sv39_enable(root);
        CHECK(run_in_mode(PRV_S, s_main, 0x9e3779b97f4a7c15ull), 0);
        csr_write(satp, 0);
        print_str("page_cross: loaded ");
        print_hex(loaded);
        for (int i = 0; i < 4; i++) {
                print_str(i ? " " : "; pages ");
                print_hex(page_sum(phys[i]));
        }
        print_str("\n");
        return 0;
}
