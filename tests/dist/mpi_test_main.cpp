// main() of the GoogleTest executables that mt_add_mpi_test runs under mpiexec. Every rank runs
// every test; rank 0 prints the usual report, other ranks print only their failures. A test that
// fails on any rank aborts the job (MPI_Abort), so mpiexec exits non-zero and no rank is left
// waiting in a collective that the failed rank skipped.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace {

class AbortOnFailure : public testing::EmptyTestEventListener {
 public:
  explicit AbortOnFailure(int rank) : rank_(rank) {}

  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (rank_ == 0 || !result.failed()) return;  // rank 0's printer reports its own failures
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }

  void OnTestEnd(const testing::TestInfo& info) override {
    if (!info.result()->Failed()) return;
    std::fprintf(stderr, "[rank %d] %s.%s FAILED: aborting the job\n", rank_,
                 info.test_suite_name(), info.name());
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  // MPI is initialised here, before any test, so that communicators made by tests find it running
  // and leave it running: MPI cannot be initialised again after MPI_Finalize.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new AbortOnFailure(rank));
  const int status = RUN_ALL_TESTS();
  MPI_Finalize();
  return status;
}
