/* Small Sv39 page tables for the ISA programs that run S-mode code through
 * their own mappings (Privileged ISA 1.12, 4.3-4.4): 4 KiB leaves where a
 * test needs them, and the devices (0-1 GiB) and RAM (2-3 GiB) identity
 * mapped with gigapages so that the runtime keeps working in S-mode.
 */
#ifndef SV39_H
#define SV39_H

#include "test.h"

#define PTE_V (1ull << 0)
#define PTE_R (1ull << 1)
#define PTE_W (1ull << 2)
#define PTE_X (1ull << 3)
#define PTE_A (1ull << 6)
#define PTE_D (1ull << 7)
#define PTE_RWX (PTE_R | PTE_W | PTE_X)
#define SATP_SV39 (8ull << 60)

#define SV39_TABLES 8

static uint64_t sv39_pool[SV39_TABLES][512] __attribute__((aligned(4096)));
static int sv39_used;

static inline uint64_t *sv39_alloc(void)
{
        CHECK(sv39_used < SV39_TABLES, 1);
        uint64_t *t = sv39_pool[sv39_used++];
        for (int i = 0; i < 512; i++)
                t[i] = 0;
        return t;
}

static inline uint64_t pte_leaf(uint64_t pa, uint64_t flags)
{
        return ((pa >> 12) << 10) | flags | PTE_V;
}

/* Map the 4 KiB page va -> pa; returns the leaf PTE's address. */
static inline volatile uint64_t *sv39_map_4k(uint64_t *root, uint64_t va, uint64_t pa,
                                             uint64_t flags)
{
        uint64_t *t = root;
        for (int level = 2; level > 0; level--) {
                uint64_t idx = (va >> (12 + 9 * level)) & 511;
                if (!(t[idx] & PTE_V))
                        t[idx] = (((uint64_t)sv39_alloc() >> 12) << 10) | PTE_V;
                t = (uint64_t *)((t[idx] >> 10) << 12);
        }
        volatile uint64_t *pte = &t[(va >> 12) & 511];
        *pte = pte_leaf(pa, flags);
        return pte;
}

/* A root with devices and RAM identity-mapped by gigapages (S-mode pages). */
static inline uint64_t *sv39_space(void)
{
        uint64_t *root = sv39_alloc();
        root[0] = pte_leaf(0, PTE_R | PTE_W | PTE_A | PTE_D);
        root[2] = pte_leaf(0x80000000ull, PTE_RWX | PTE_A | PTE_D);
        return root;
}

static inline void sv39_enable(uint64_t *root)
{
        csr_write(satp, SATP_SV39 | ((uint64_t)root >> 12));
        asm volatile ("sfence.vma" ::: "memory");
}

#endif /* SV39_H */
