// Running the project's programs (build/bin/<name>) from tests as a user would, capturing exit
// code and output, and per-test scratch folders under the build tree ($MT_BINARY_DIR overrides).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace mt::testing {

struct ProgramResult {
  int exit_code;       // -1 if the program did not exit normally
  std::string output;  // stdout and stderr
};

// The build tree: $MT_BINARY_DIR when set (a bundle of the binaries moved to another machine,
// tests/gpu/make_bundle.sh), else the tree the tests were built in.
inline std::string binary_dir() {
  const char* env = std::getenv("MT_BINARY_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(MT_BINARY_DIR);
}

// Runs a shell command line, capturing its stdout and stderr.
inline ProgramResult run_shell(const std::string& cmd) {
  ProgramResult r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline ProgramResult run_program(const std::string& program, const std::string& args) {
  return run_shell(binary_dir() + "/bin/" + program + " " + args);
}

// What mpiexec needs in the tests: root inside containers, more ranks than cores, and OpenMP
// threads that sleep instead of spinning while ranks share the cores.
constexpr const char* kMpiTestEnv =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
    "OMP_WAIT_POLICY=PASSIVE ";

// `program args` on `ranks` ranks under mpiexec, killed after 300 s.
inline ProgramResult run_mpi(int ranks, const std::string& program, const std::string& args) {
  return run_shell(std::string(kMpiTestEnv) + "timeout 300 mpiexec --oversubscribe -n " +
                   std::to_string(ranks) + " " + binary_dir() + "/bin/" + program + " " + args);
}

// An empty folder <build>/test_runs/<name>, recreated on every call.
inline std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::path(binary_dir()) / "test_runs" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The shared data folder (../shared/data beside the repository, or $MT_DATA_DIR).
inline std::string data_dir() {
  const char* env = std::getenv("MT_DATA_DIR");
  return env != nullptr ? std::string(env) : std::string(MT_SOURCE_DIR) + "/../shared/data";
}

// True in CI (CI=true), where missing shared data is a failure rather than a skip.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

}  // namespace mt::testing
