# Self-test of the v environment: virtual page 0 is not mapped, so a load from
# it is a load page fault, taken by the environment's S-mode kernel, which must
# have it reported (scause 0xd) in test 4, exit status 4.

#include "riscv_test.h"
#include "test_macros.h"

RVTEST_RV64U
RVTEST_CODE_BEGIN

  li TESTNUM, 4
  ld a0, 0(zero)                         # page fault

  TEST_PASSFAIL

RVTEST_CODE_END

  .data
RVTEST_DATA_BEGIN
  TEST_DATA
RVTEST_DATA_END
