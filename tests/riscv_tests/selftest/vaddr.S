# Self-test of the v environment: the test runs at its virtual address,
# physical - DRAM_BASE (below 2 MiB), and its data is reached through the
# same mapping.

#include "riscv_test.h"
#include "test_macros.h"

RVTEST_RV64U
RVTEST_CODE_BEGIN

  li TESTNUM, 2
  auipc a0, 0
  li t0, 0x200000
  bgeu a0, t0, fail

  TEST_CASE(3, a1, 0x1234, la a0, word; bgeu a0, t0, fail; lw a1, 0(a0))
  TEST_CASE(4, a1, 0x5678, la a0, word; li a1, 0x5678; sw a1, 0(a0); lw a1, 0(a0))

  TEST_PASSFAIL

RVTEST_CODE_END

  .data
RVTEST_DATA_BEGIN
  TEST_DATA
word: .word 0x1234
RVTEST_DATA_END
