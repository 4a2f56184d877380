// The doctest runner of every CPU test program, with one addition: a run given a test-case
// filter (--test-case= / -tc=, as CTest's doctest_discover_tests runs each test) that matches no
// test case FAILS. Plain doctest passes such a run with "0 test cases", so a test whose name
// CTest cannot pass through intact (a ';' splits it) was reported "Passed" without running.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace {

unsigned g_cases_run = 0;

// Records how many test cases passed the filters, which Context::run() does not return.
struct CountCasesRun : doctest::IReporter {
  explicit CountCasesRun(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override { g_cases_run = s.numTestCasesPassingFilters; }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

bool has_test_case_filter(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    while (*a == '-') ++a;
    if (std::strncmp(a, "dt-", 3) == 0) a += 3;
    if (std::strncmp(a, "test-case=", 10) == 0 || std::strncmp(a, "tc=", 3) == 0) return true;
  }
  return false;
}

}  // namespace

REGISTER_LISTENER("count_cases_run", 1, CountCasesRun);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;  // --list-test-cases, --help, ...
  if (rc == 0 && g_cases_run == 0 && has_test_case_filter(argc, argv)) {
    std::fprintf(stderr,
                 "error: the test-case filter matched no test case (a name with ';' is split by CTest: "
                 "rename the test)\n");
    return 1;
  }
  return rc;
}
