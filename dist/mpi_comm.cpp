// The MPI backend of dist::Comm (dist/mpi_comm.h): in-place collectives on host buffers over
// MPI_COMM_WORLD, split into calls of at most max_count_per_call elements.
#include "dist/mpi_comm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"
#include "dist/mpi_check.h"

namespace mt::dist {

namespace {

template <typename T>
void allreduce_in_place(T* buf, size_t n, MPI_Datatype type, MPI_Op op, size_t max_count) {
  for (size_t offset = 0; offset < n; offset += max_count) {
    const int count = static_cast<int>(std::min(max_count, n - offset));
    MT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + offset, count, type, op, MPI_COMM_WORLD));
  }
}

}  // namespace

MpiComm::MpiComm(size_t max_count_per_call) : max_count_per_call_(max_count_per_call) {
  MT_CHECK(max_count_per_call_ > 0 && max_count_per_call_ <= kMaxCountPerCall,
           "max_count_per_call ", max_count_per_call_);
  int initialized = 0;
  int finalized = 0;
  MT_MPI_CHECK(MPI_Initialized(&initialized));
  MT_MPI_CHECK(MPI_Finalized(&finalized));
  MT_CHECK(!finalized, "MPI is already finalised: create one MpiComm for the whole job");
  if (!initialized) {
    int provided = 0;
    MT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
  }
  try {
    MT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    MT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    MPI_Comm node = MPI_COMM_NULL;
    MT_MPI_CHECK(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    const int rank_status = MPI_Comm_rank(node, &local_rank_);
    MT_MPI_CHECK(MPI_Comm_free(&node));
    MT_MPI_CHECK(rank_status);
  } catch (...) {
    if (owns_mpi_) MPI_Finalize();
    throw;
  }
}

MpiComm::~MpiComm() {
  if (!owns_mpi_) return;
  const int status = MPI_Finalize();
  if (status != MPI_SUCCESS)
    std::fprintf(stderr, "mt::dist::MpiComm: MPI_Finalize failed: %s\n",
                 detail::mpi_message(status).c_str());
}

void MpiComm::allreduce_sum(float* buf, size_t n) {
  allreduce_in_place(buf, n, MPI_FLOAT, MPI_SUM, max_count_per_call_);
}

void MpiComm::allreduce_sum(double* buf, size_t n) {
  allreduce_in_place(buf, n, MPI_DOUBLE, MPI_SUM, max_count_per_call_);
}

void MpiComm::allreduce_sum(int64_t* buf, size_t n) {
  allreduce_in_place(buf, n, MPI_INT64_T, MPI_SUM, max_count_per_call_);
}

void MpiComm::allreduce_max(int64_t* buf, size_t n) {
  allreduce_in_place(buf, n, MPI_INT64_T, MPI_MAX, max_count_per_call_);
}

void MpiComm::broadcast(void* buf, size_t bytes, int root) {
  MT_CHECK(root >= 0 && root < size_, "broadcast root ", root, " with ", size_, " ranks");
  auto* bytes_buf = static_cast<char*>(buf);
  for (size_t offset = 0; offset < bytes; offset += max_count_per_call_) {
    const int count = static_cast<int>(std::min(max_count_per_call_, bytes - offset));
    MT_MPI_CHECK(MPI_Bcast(bytes_buf + offset, count, MPI_BYTE, root, MPI_COMM_WORLD));
  }
}

void MpiComm::barrier() { MT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

void MpiComm::abort(int exit_code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
}

}  // namespace mt::dist
