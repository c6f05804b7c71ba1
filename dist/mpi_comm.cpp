// The MPI backend of dist::Comm (dist/mpi_comm.h): in-place collectives on host buffers over
// MPI_COMM_WORLD, split into calls of at most max_count_per_call elements. Each call is a
// non-blocking collective polled against the deadline, after the rank has announced it to the
// others, so that a rank left waiting can say who has not come.
#include "dist/mpi_comm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "core/check.h"
#include "dist/deadline.h"
#include "dist/mpi_check.h"

namespace mt::dist {

namespace {

constexpr int kNoticeTag = 7;

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  if constexpr (std::is_same_v<T, double>) return "double";
  return "int64";
}

std::string processor_name() {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  MT_MPI_CHECK(MPI_Get_processor_name(name, &length));
  return std::string(name, static_cast<size_t>(length));
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
    std::vector<char> names(static_cast<size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
    const std::string own = processor_name();
    std::copy(own.begin(), own.end(), names.begin() + rank_ * MPI_MAX_PROCESSOR_NAME);
    MT_MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, names.data(),
                               MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD));
    for (int r = 0; r < size_; ++r) hosts_.emplace_back(names.data() + r * MPI_MAX_PROCESSOR_NAME);
    MT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &notices_));
    seen_.assign(static_cast<size_t>(size_), 0);
  } catch (...) {
    if (owns_mpi_) MPI_Finalize();
    throw;
  }
}

MpiComm::~MpiComm() {
  release_notices();
  if (!owns_mpi_) return;
  const int status = MPI_Finalize();
  if (status != MPI_SUCCESS)
    std::fprintf(stderr, "mt::dist::MpiComm: MPI_Finalize failed: %s\n",
                 detail::mpi_message(status).c_str());
}

// Every rank has ended its sends to the others when the barrier completes; what has arrived is
// read so that no message is left unreceived when the communicator is freed.
void MpiComm::release_notices() noexcept {
  if (notices_ == MPI_COMM_NULL) return;
  for (auto& n : sending_)
    MPI_Waitall(static_cast<int>(n->sends.size()), n->sends.data(), MPI_STATUSES_IGNORE);
  sending_.clear();
  if (MPI_Barrier(notices_) == MPI_SUCCESS) {
    try {
      read_notices();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mt::dist::MpiComm: %s\n", e.what());
    }
  }
  MPI_Comm_free(&notices_);
}

void MpiComm::announce() {
  ++seq_;
  while (!sending_.empty()) {  // retire the notices whose sends have completed
    Notice& n = *sending_.front();
    int done = 0;
    MT_MPI_CHECK(
        MPI_Testall(static_cast<int>(n.sends.size()), n.sends.data(), &done, MPI_STATUSES_IGNORE));
    if (!done) break;
    sending_.pop_front();
  }
  read_notices();
  if (size_ == 1 || size_ > kMaxNoticeRanks) return;
  auto n = std::make_unique<Notice>();
  n->seq = seq_;
  n->sends.resize(static_cast<size_t>(size_ - 1));
  for (int r = 0, i = 0; r < size_; ++r) {
    if (r == rank_) continue;
    MT_MPI_CHECK(MPI_Isend(&n->seq, 1, MPI_INT64_T, r, kNoticeTag, notices_,
                           &n->sends[static_cast<size_t>(i++)]));
  }
  sending_.push_back(std::move(n));
}

void MpiComm::read_notices() {
  for (;;) {
    int flag = 0;
    MPI_Status status;
    MT_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kNoticeTag, notices_, &flag, &status));
    if (!flag) return;
    int64_t seq = 0;
    MT_MPI_CHECK(
        MPI_Recv(&seq, 1, MPI_INT64_T, status.MPI_SOURCE, kNoticeTag, notices_, MPI_STATUS_IGNORE));
    int64_t& seen = seen_[static_cast<size_t>(status.MPI_SOURCE)];
    seen = std::max(seen, seq);
  }
}

std::string MpiComm::missing_ranks() {
  if (size_ > kMaxNoticeRanks)
    return detail::concat("which ranks have not reached it is not tracked above ", kMaxNoticeRanks,
                          " ranks");
  try {
    read_notices();
  } catch (const std::exception& e) {
    return detail::concat("which ranks have not reached it is unknown (", e.what(), ")");
  }
  std::string list;
  int missing = 0;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_ || seen_[static_cast<size_t>(r)] >= seq_) continue;
    list += detail::concat(missing++ ? ", " : "", r, " (host ", host(r), ")");
  }
  if (missing == 0) return "every rank has reached it (a network or MPI fault between the ranks?)";
  return detail::concat(missing == 1 ? "rank " : "ranks ", list, missing == 1 ? " has" : " have",
                        " not reached it");
}

void MpiComm::collective(const std::string& call, const std::function<int(MPI_Request*)>& start) {
  announce();
  MPI_Request request = MPI_REQUEST_NULL;
  MT_MPI_CHECK(start(&request));
  const std::string what = detail::concat("rank ", rank_, " of ", size_, " (host ", host(rank_),
                                          "): MPI ", call, " during ", context());
  const WaitResult w = wait_until_done(
      [&] {
        int done = 0;
        const int status = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (status != MPI_SUCCESS) return Poll::failed(detail::mpi_message(status));
        return done ? Poll::done() : Poll::pending();
      },
      deadline_s(), what, /*spin=*/true);
  if (w.ok()) return;
  // The request stays in flight: the job is about to end (run_on_ranks aborts it).
  throw Error(ExitCode::kRuntime,
              detail::concat(w.message, "; ", missing_ranks(),
                             w.status == WaitResult::Status::kTimedOut
                                 ? " (a rank may have stalled or died, or lost its network; "
                                   "dist.timeout sets the deadline)"
                                 : ""));
}

template <typename T>
void MpiComm::allreduce(T* buf, size_t n, MPI_Datatype type, MPI_Op op, const char* name) {
  for (size_t offset = 0; offset < n; offset += max_count_per_call_) {
    const int count = static_cast<int>(std::min(max_count_per_call_, n - offset));
    collective(detail::concat(name, " of ", count, " ", type_name<T>()), [&](MPI_Request* r) {
      return MPI_Iallreduce(MPI_IN_PLACE, buf + offset, count, type, op, MPI_COMM_WORLD, r);
    });
  }
}

void MpiComm::allreduce_sum(float* buf, size_t n) {
  allreduce(buf, n, MPI_FLOAT, MPI_SUM, "allreduce_sum");
}

void MpiComm::allreduce_sum(double* buf, size_t n) {
  allreduce(buf, n, MPI_DOUBLE, MPI_SUM, "allreduce_sum");
}

void MpiComm::allreduce_sum(int64_t* buf, size_t n) {
  allreduce(buf, n, MPI_INT64_T, MPI_SUM, "allreduce_sum");
}

void MpiComm::allreduce_max(int64_t* buf, size_t n) {
  allreduce(buf, n, MPI_INT64_T, MPI_MAX, "allreduce_max");
}

void MpiComm::broadcast(void* buf, size_t bytes, int root) {
  MT_CHECK(root >= 0 && root < size_, "broadcast root ", root, " with ", size_, " ranks");
  auto* bytes_buf = static_cast<char*>(buf);
  for (size_t offset = 0; offset < bytes; offset += max_count_per_call_) {
    const int count = static_cast<int>(std::min(max_count_per_call_, bytes - offset));
    collective(detail::concat("broadcast of ", count, " bytes from rank ", root),
               [&](MPI_Request* r) {
                 return MPI_Ibcast(bytes_buf + offset, count, MPI_BYTE, root, MPI_COMM_WORLD, r);
               });
  }
}

void MpiComm::barrier() {
  collective("barrier", [](MPI_Request* r) { return MPI_Ibarrier(MPI_COMM_WORLD, r); });
}

void MpiComm::abort(int exit_code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
}

}  // namespace mt::dist
