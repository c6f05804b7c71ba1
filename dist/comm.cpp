// Backend selection (make_comm, including the "auto" rule) and the single-process backend of
// dist/comm.h.
#include "dist/comm.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>
#include <vector>

#include "core/check.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"

namespace mt::dist {

namespace {
// The value of an environment variable that holds a positive integer, or 0.
int positive_env(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value <= 0 || value > (1L << 30)) return 0;
  return static_cast<int>(value);
}
}  // namespace

void Comm::set_timeout(double timeout_s) {
  MT_REQUIRE(timeout_s > 0 && timeout_s < 1e9,
             "dist.timeout must be a positive number of seconds "
             "below 1e9, got ",
             timeout_s);
  timeout_s_ = timeout_s;
}

void SingleProcessComm::abort(int exit_code) { std::_Exit(exit_code); }

std::string SingleProcessComm::host(int) const {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? name : "localhost";
}

std::string describe_placement(const Comm& comm) {
  std::vector<std::pair<std::string, std::vector<int>>> hosts;  // in order of first rank
  for (int r = 0; r < comm.size(); ++r) {
    const std::string h = comm.host(r);
    auto it = std::find_if(hosts.begin(), hosts.end(), [&](const auto& e) { return e.first == h; });
    if (it == hosts.end()) it = hosts.insert(hosts.end(), {h, {}});
    it->second.push_back(r);
  }
  std::string out;
  for (const auto& [name, ranks] : hosts) {
    std::string list;
    for (size_t i = 0; i < ranks.size();) {
      size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      list += detail::concat(list.empty() ? "" : ",", ranks[i]);
      if (j > i) list += detail::concat("-", ranks[j]);
      i = j + 1;
    }
    out += detail::concat(out.empty() ? "" : ", ", name, ranks.size() == 1 ? " (rank " : " (ranks ",
                          list, ")");
  }
  return out;
}

int launched_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const int n = positive_env(name); n > 0) return n;
  }
  // srun --mpi=pmix sets neither: PMIx gives the size only inside MPI_Init. Slurm's step size
  // is the job's (a step's ranks are the MPI job), and PMIX_RANK says that PMIx started us.
  if (std::getenv("PMIX_RANK") != nullptr) return positive_env("SLURM_STEP_NUM_TASKS");
  return 0;
}

namespace {
std::unique_ptr<Comm> make_backend(const std::string& backend, double timeout_s) {
  if (backend == "single") return std::make_unique<SingleProcessComm>();
  if (backend == "mpi") return std::make_unique<MpiComm>();
  if (backend == "nccl") return make_nccl_comm(NcclOptions{timeout_s});
  if (backend == "auto") {
    if (launched_ranks() > 1) return std::make_unique<MpiComm>();
    return std::make_unique<SingleProcessComm>();
  }
  throw UsageError(detail::concat("unknown communicator backend '", backend,
                                  "' (choose single, mpi, nccl or auto)"));
}
}  // namespace

std::unique_ptr<Comm> make_comm(const std::string& backend, double timeout_s) {
  auto comm = make_backend(backend, timeout_s);
  comm->set_timeout(timeout_s);
  return comm;
}

}  // namespace mt::dist
