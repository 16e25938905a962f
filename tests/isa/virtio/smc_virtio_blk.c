/* Device DMA over hot code: virtio-blk reads into pages of translated
 * functions, then the functions are called and must run the disk's code.
 *
 * Not one of the automatic ISA programs (it needs a disk: see
 * tests/cpu/test_jit_smc.py, which builds the image and runs this program
 * under QEMU and vmkit).  Sector s of the disk holds 64 copies of
 * `addi a0, a0, K(s); ret` (K as in disk_k() below).  dma_pages, 8 pages,
 * start as copies of `addi a0, a0, 1; ret`, so every 8-byte-aligned offset
 * is a function entry.  Page i's buffer is the 512 bytes at offset 512 * i
 * and its function under test is the one 0x100 into the buffer.  Twice
 * over: all eight functions run hot (and get translated), then sector
 * 8 * pass + i is read into page i's buffer and the function called again,
 * with the buffer's last function and a neighbour outside the buffer, which
 * the read must not change.  One page per buffer, so that each read lands
 * on code that is still translated (a store or DMA into a code page drops
 * every translation made from that page).
 *
 * The driver: virtio 1.2, 4.2 (virtio-mmio, version 2, found by scanning
 * the board's 8 slots for magic "virt" and device ID 2), 3.1.1 (device
 * initialization, VIRTIO_F_VERSION_1 only), 2.7 (one split virtqueue of 8
 * descriptors, polled: no interrupts), 5.2.6 (virtio-blk requests:
 * header, data, status).
 */
#include "smc.h"

#define PASSES          2
#define BUFS            8
#define DISK_SECTORS    32

#define VIRTIO_MMIO_BASE   0x10001000ull
#define VIRTIO_MMIO_STRIDE 0x1000ull
#define VIRTIO_MMIO_SLOTS  8
#define VIRTIO_MAGIC       0x74726976   /* "virt" */
#define VIRTIO_ID_BLOCK    2

/* Registers (4.2.2). */
#define MAGIC_VALUE         0x000
#define VERSION             0x004
#define DEVICE_ID           0x008
#define DEVICE_FEATURES     0x010
#define DEVICE_FEATURES_SEL 0x014
#define DRIVER_FEATURES     0x020
#define DRIVER_FEATURES_SEL 0x024
#define QUEUE_SEL           0x030
#define QUEUE_NUM_MAX       0x034
#define QUEUE_NUM           0x038
#define QUEUE_READY         0x044
#define QUEUE_NOTIFY        0x050
#define INTERRUPT_STATUS    0x060
#define INTERRUPT_ACK       0x064
#define STATUS              0x070
#define QUEUE_DESC_LOW      0x080
#define QUEUE_DESC_HIGH     0x084
#define QUEUE_DRIVER_LOW    0x090
#define QUEUE_DRIVER_HIGH   0x094
#define QUEUE_DEVICE_LOW    0x0a0
#define QUEUE_DEVICE_HIGH   0x0a4
#define CONFIG              0x100       /* virtio-blk: u64 capacity first */

/* Device status bits (2.1). */
#define S_ACKNOWLEDGE 1
#define S_DRIVER      2
#define S_DRIVER_OK   4
#define S_FEATURES_OK 8

#define VIRTQ_DESC_F_NEXT  1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTIO_BLK_T_IN    0
#define VIRTIO_BLK_S_OK    0

#define QSIZE 8

struct virtq_desc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
};
struct virtq_avail {
        uint16_t flags;
        uint16_t idx;
        uint16_t ring[QSIZE];
        uint16_t used_event;
};
struct virtq_used_elem {
        uint32_t id;
        uint32_t len;
};
struct virtq_used {
        uint16_t flags;
        uint16_t idx;
        struct virtq_used_elem ring[QSIZE];
        uint16_t avail_event;
};
struct virtio_blk_req {
        uint32_t type;
        uint32_t reserved;
        uint64_t sector;
};

static struct virtq_desc desc[QSIZE] __attribute__((aligned(16)));
static struct virtq_avail avail __attribute__((aligned(16)));
static struct virtq_used used __attribute__((aligned(16)));
static struct virtio_blk_req req __attribute__((aligned(16)));
static volatile uint8_t req_status;
static uint64_t dev;                    /* the transport's base address */
static uint16_t last_used;

uint64_t dma_pages(uint64_t);

asm(
"       .pushsection .text.smc_dma_pages, \"ax\", @progbits\n"
"       .balign 4096\n"
"       .option push\n"
"       .option norvc\n"
"       .globl  dma_pages\n"
"dma_pages:\n"
"       .rept   512 * 8\n"
"       addi    a0, a0, 1\n"
"       ret\n"
"       .endr\n"
"       .option pop\n"
"       .popsection\n");

/* The immediate of sector s's functions (tests/cpu/test_jit_smc.py: disk_k). */
static int64_t disk_k(uint64_t s)
{
        return (int64_t)((s * 97 + 5) & 0x7ff) - 1024;
}

static uint32_t reg_read(uint64_t off)
{
        return mmio_read32(dev + off);
}

static void reg_write(uint64_t off, uint32_t v)
{
        mmio_write32(dev + off, v);
}

static void fail(const char *what, uint64_t value)
{
        print_str(TEST_NAME ": ");
        print_str(what);
        print_str(" ");
        print_hex(value);
        print_str("\n");
        test_exit(EXIT_CHECK);
}

static void blk_init(void)
{
        for (int i = 0; i < VIRTIO_MMIO_SLOTS && !dev; i++) {
                uint64_t base = VIRTIO_MMIO_BASE + VIRTIO_MMIO_STRIDE * i;
                if (mmio_read32(base + MAGIC_VALUE) == VIRTIO_MAGIC
                    && mmio_read32(base + DEVICE_ID) == VIRTIO_ID_BLOCK)
                        dev = base;
        }
        if (!dev)
                fail("no virtio-blk device in the virtio-mmio slots:", VIRTIO_MMIO_BASE);
        if (reg_read(VERSION) != 2)
                fail("virtio-mmio version is not 2 (modern):", reg_read(VERSION));

        /* 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK */
        reg_write(STATUS, 0);
        while (reg_read(STATUS) != 0)
                ;
        reg_write(STATUS, S_ACKNOWLEDGE);
        reg_write(STATUS, S_ACKNOWLEDGE | S_DRIVER);
        reg_write(DEVICE_FEATURES_SEL, 1);
        if (!(reg_read(DEVICE_FEATURES) & 1))       /* bit 32: VIRTIO_F_VERSION_1 */
                fail("device does not offer VIRTIO_F_VERSION_1: features[63:32] =",
                     reg_read(DEVICE_FEATURES));
        reg_write(DRIVER_FEATURES_SEL, 0);
        reg_write(DRIVER_FEATURES, 0);
        reg_write(DRIVER_FEATURES_SEL, 1);
        reg_write(DRIVER_FEATURES, 1);
        reg_write(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        if (!(reg_read(STATUS) & S_FEATURES_OK))
                fail("FEATURES_OK refused: status", reg_read(STATUS));

        /* 4.2.3.2: queue 0 */
        reg_write(QUEUE_SEL, 0);
        if (reg_read(QUEUE_READY) != 0)
                fail("queue 0 ready before setup:", reg_read(QUEUE_READY));
        if (reg_read(QUEUE_NUM_MAX) < QSIZE)
                fail("queue 0 too small: QueueNumMax", reg_read(QUEUE_NUM_MAX));
        reg_write(QUEUE_NUM, QSIZE);
        reg_write(QUEUE_DESC_LOW, (uint32_t)(uint64_t)desc);
        reg_write(QUEUE_DESC_HIGH, (uint32_t)((uint64_t)desc >> 32));
        reg_write(QUEUE_DRIVER_LOW, (uint32_t)(uint64_t)&avail);
        reg_write(QUEUE_DRIVER_HIGH, (uint32_t)((uint64_t)&avail >> 32));
        reg_write(QUEUE_DEVICE_LOW, (uint32_t)(uint64_t)&used);
        reg_write(QUEUE_DEVICE_HIGH, (uint32_t)((uint64_t)&used >> 32));
        reg_write(QUEUE_READY, 1);
        reg_write(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);

        uint64_t capacity = reg_read(CONFIG) | ((uint64_t)reg_read(CONFIG + 4) << 32);
        if (capacity != DISK_SECTORS)
                fail("unexpected disk capacity (sectors):", capacity);
}

/* Read one 512-byte sector into buf, polling the used ring (5.2.6). */
static void blk_read(uint64_t sector, void *buf)
{
        req.type = VIRTIO_BLK_T_IN;
        req.reserved = 0;
        req.sector = sector;
        req_status = 0xff;
        desc[0] = (struct virtq_desc){(uint64_t)&req, sizeof req, VIRTQ_DESC_F_NEXT, 1};
        desc[1] = (struct virtq_desc){(uint64_t)buf, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2};
        desc[2] = (struct virtq_desc){(uint64_t)&req_status, 1, VIRTQ_DESC_F_WRITE, 0};
        volatile struct virtq_avail *av = &avail;
        av->ring[av->idx % QSIZE] = 0;
        asm volatile ("fence rw, rw" ::: "memory");     /* ring entry before idx */
        av->idx = av->idx + 1;
        asm volatile ("fence rw, rw" ::: "memory");     /* idx before the notify */
        reg_write(QUEUE_NOTIFY, 0);
        volatile struct virtq_used *us = &used;
        uint64_t spins = 0;
        while (us->idx == last_used)
                if (++spins > 100000000)
                        fail("virtio-blk read timed out: sector", sector);
        asm volatile ("fence rw, rw" ::: "memory");
        if (us->ring[last_used % QSIZE].id != 0)
                fail("used ring returned another chain:", us->ring[last_used % QSIZE].id);
        last_used++;
        if (req_status != VIRTIO_BLK_S_OK)
                fail("virtio-blk read failed: status", req_status);
        reg_write(INTERRUPT_ACK, reg_read(INTERRUPT_STATUS));
        fence_i();      /* the device's writes are now in the fetch stream */
}

static char *buffer(int i)
{
        return CODE(dma_pages) + 4096 * i + 512 * i;
}

int main(void)
{
        int64_t k[BUFS];        /* the immediate in each buffer now */
        CHECK((uint64_t)CODE(dma_pages) & 0xfff, 0);
        for (int i = 0; i < BUFS; i++)
                k[i] = 1;
        blk_init();
        smc_start();

        for (uint64_t pass = 0; pass < PASSES; pass++) {
                /* hot, and translated, before the reads */
                for (int i = 0; i < BUFS; i++)
                        warm("before the read", pass * BUFS + i, fn_at((uint64_t)buffer(i) + 0x100),
                             i, i + k[i]);
                settle(2 * SETTLE_EXITS);               /* eight translations to wait for */

                for (int i = 0; i < BUFS; i++) {
                        smc_checkpoint();
                        uint64_t s = pass * BUFS + i, arg = 1000 * (s + 1);
                        char *buf = buffer(i);
                        /* a neighbour in the same page, outside the buffer: never read over */
                        char *nb = i == BUFS - 1 ? buf - 512 : buf + 512;
                        smc_fn fn = fn_at((uint64_t)buf + 0x100);
                        smc_fn last = fn_at((uint64_t)buf + 0x1f8);
                        smc_fn neighbour = fn_at((uint64_t)nb + 0x100);
                        smc_run("before the read", s, fn, arg, arg + k[i], 2);

                        blk_read(s % DISK_SECTORS, buf);
                        k[i] = disk_k(s % DISK_SECTORS);

                        smc_run("after the read", s, fn, arg, arg + k[i], 64);
                        smc_run("last function of the sector", s, last, arg, arg + k[i], 8);
                        smc_run("neighbour of the buffer", s, neighbour, arg, arg + 1, 8);
                }
        }
        print_str(TEST_NAME ": ");
        print_dec(PASSES * BUFS);
        print_str(" virtio-blk reads over hot code seen\n");
        return 0;
}
