# Self-test of the environments: a user-level test runs in U-mode, so reading
# sstatus is an illegal instruction; with no mtvec_handler the environment must
# report the unexpected trap (mcause 2) in test 3 and exit with status 3.

#include "riscv_test.h"
#include "test_macros.h"

RVTEST_RV64U
RVTEST_CODE_BEGIN

  li TESTNUM, 3
  csrr a0, sstatus                       # traps in U-mode

  TEST_PASSFAIL

RVTEST_CODE_END

  .data
RVTEST_DATA_BEGIN
  TEST_DATA
RVTEST_DATA_END
