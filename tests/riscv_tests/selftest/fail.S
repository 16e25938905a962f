# Self-test of the environments: a failing test case must end the run with
# "FAIL: test 5" and exit status 5.

#include "riscv_test.h"
#include "test_macros.h"

RVTEST_RV64U
RVTEST_CODE_BEGIN

  TEST_CASE(2, a0, 1, li a0, 1)
  TEST_CASE(5, a0, 7, li a0, 6)          # fails

  TEST_PASSFAIL

RVTEST_CODE_END

  .data
RVTEST_DATA_BEGIN
  TEST_DATA
RVTEST_DATA_END
