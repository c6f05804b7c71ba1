// Progress output is live when stdout is a file (nohup, Slurm's output file): an evaluation line
// is in the file while the run still goes on, not only at exit (guarded_main line-buffers
// stdout). The run is short on output (a few lines, far below a stdio buffer) and long on time
// (600-episode evaluations after the first), so a fully buffered stdout fails the test.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/processes.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(LiveOutput, AnEvaluationLineIsInTheFileBeforeTheRunEnds) {
  const std::string dir = testing::temp_dir("live_output"), log = dir + "/stdout.txt";
  const pid_t pid = testing::spawn(testing::binary_dir() +
                                       "/bin/metatrain steps=2 eval.every=1 eval.episodes=600 "
                                       "model.filters=16 threads=1 checkpoint.dir=" +
                                       dir + "/run",
                                   log);
  ASSERT_GT(pid, 0);
  const bool seen = testing::wait_until(
      [&] { return read_all(log).find("eval @ step 1:") != std::string::npos; }, 120);
  const bool running = kill(pid, 0) == 0 && read_all(log).find("final eval") == std::string::npos;
  kill(pid, SIGKILL);
  testing::wait_for(pid, 30);
  EXPECT_TRUE(seen) << "no evaluation line within 120 s:\n" << read_all(log);
  EXPECT_TRUE(running) << "the run had already ended: the test proves nothing";
}

}  // namespace
}  // namespace mt
