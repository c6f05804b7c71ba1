// `metatrain device=cuda` as a user runs it: a short run that trains, evaluates and
// checkpoints on the GPU; its checkpoint resumed on the CPU (and a CPU checkpoint on the GPU);
// CUDA and CPU runs of the same steps agreeing to float32 tolerance; graphs on and off giving
// the same bits; the same run twice giving the same bits. Needs a GPU (label gpu).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/hdf5.h"
#include "data/episode_store.h"
#include "tests/support/checkpoints.h"
#include "tests/support/programs.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

using testing::temp_dir;
using Result = testing::ProgramResult;

#define MT_NEED_GPU() \
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices()

Result metatrain(const std::string& args) { return testing::run_program("metatrain", args); }

std::string small(const std::string& dir) {
  return "model.filters=16 meta_batch=4 task.queries=5 eval.episodes=40 inner.steps=2 "
         "log.every=1 checkpoint.dir=" +
         dir;
}

std::vector<float> params(const std::string& path) { return testing::checkpoint_params(path); }

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return a.size() == b.size() && den > 0 ? std::sqrt(num / den) : INFINITY;
}

TEST(MetatrainCuda, TrainsOnTheGpuAndAgreesWithTheCpu) {
  MT_NEED_GPU();
  const std::string gpu = temp_dir("cuda_run"), cpu = temp_dir("cpu_run");
  const Result g = metatrain(small(gpu) + " steps=4 device=cuda");
  ASSERT_EQ(g.exit_code, 0) << g.output;
  EXPECT_NE(g.output.find("device: cuda on GPU"), std::string::npos) << g.output;
  EXPECT_NE(g.output.find("final eval (test, 40 episodes"), std::string::npos) << g.output;
  ASSERT_EQ(metatrain(small(cpu) + " steps=4 device=cpu").exit_code, 0);
  // float32 on both; 4 Adam steps amplify rounding differences little: 1e-3 relative.
  EXPECT_LT(rel_diff(params(gpu + "/latest.h5"), params(cpu + "/latest.h5")), 1e-3);
}

// debug.dump of a cuda run holds the GPU's gradients: they agree with the CPU's dump of the same
// step (and so can be checked against JAX with tests/golden/check_dump.py).
TEST(MetatrainCuda, DebugDumpOfTheGpuMatchesTheCpu) {
  MT_NEED_GPU();
  const std::string g = temp_dir("dump_gpu"), c = temp_dir("dump_cpu");
  ASSERT_EQ(metatrain(small(g) + " steps=1 device=cuda debug.dump=" + g + "/d.h5").exit_code, 0);
  ASSERT_EQ(metatrain(small(c) + " steps=1 device=cpu debug.dump=" + c + "/d.h5").exit_code, 0);
  const h5::File fg = h5::File::open_read(g + "/d.h5"), fc = h5::File::open_read(c + "/d.h5");
  for (int t = 0; t < 4; ++t)
    for (const char* which : {"g_fo", "g_exact"}) {
      const std::string path = "/tasks/" + std::to_string(t) + "/" + which;
      EXPECT_LT(rel_diff(fg.read<float>(path), fc.read<float>(path)), 1e-3) << path;
    }
}

TEST(MetatrainCuda, GraphsOnAndOffAndTwoRunsGiveTheSameBits) {
  MT_NEED_GPU();
  const std::string a = temp_dir("graphs_a"), b = temp_dir("graphs_b"), c = temp_dir("eager");
  // Both forms are chosen without timing (auto = the GEMM form; cudnn: heuristic, pinned), so
  // two processes pick the same algorithms and give the same bits.
  for (const char* conv : {"auto", "cudnn"}) {
    const std::string run =
        std::string(" steps=3 device=cuda algo=ufom ufom.q=adaptive cuda.conv=") + conv;
    for (const std::string& dir : {a, b}) ASSERT_EQ(metatrain(small(dir) + run).exit_code, 0);
    ASSERT_EQ(metatrain(small(c) + run + " cuda.graphs=false").exit_code, 0);
    EXPECT_EQ(params(a + "/latest.h5"), params(b + "/latest.h5")) << conv;
    EXPECT_EQ(params(a + "/latest.h5"), params(c + "/latest.h5")) << conv;
  }
}

// The start-up line names the CUDA stack; cuda.tune says that it gives up reproducibility.
TEST(MetatrainCuda, StartUpLineNamesVersionsAndTheConvolutionChoice) {
  MT_NEED_GPU();
  const Result r = metatrain(small(temp_dir("versions")) + " steps=1 device=cuda cuda.tune=true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"CUDA runtime", "driver", "cuBLAS", "cuDNN", "cuda.conv=auto tuned",
                           "not reproducible", " ms"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " missing in:\n" << r.output;
}

// A device-resident store (only indices cross PCIe, the GPU gathers the pixels) trains to the
// same bits as the same store read through HDF5 and as a host-resident one.
TEST(MetatrainCuda, DeviceResidentStoreGivesTheBitsOfTheOtherModes) {
  MT_NEED_GPU();
  const std::string store = temp_dir("resident_store") + "/s.h5";
  write_store(store, testing::synthetic_store(12, 8, 28, 5));
  std::vector<float> by_mode[3];
  int k = 0;
  for (const char* mode : {"off", "host", "device"}) {
    const std::string dir = temp_dir(std::string("resident_") + mode);
    const Result r =
        metatrain(small(dir) + " steps=3 device=cuda data.path=" + store +
                  " data.train_split=train data.eval_split=train data.resident=" + mode);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(std::string("resident: ") + mode), std::string::npos) << r.output;
    by_mode[k++] = params(dir + "/latest.h5");
  }
  EXPECT_EQ(by_mode[0], by_mode[1]);
  EXPECT_EQ(by_mode[0], by_mode[2]);
}

TEST(MetatrainCuda, CheckpointsMoveBetweenCudaAndCpu) {
  MT_NEED_GPU();
  const std::string straight = temp_dir("straight_cpu"), moved = temp_dir("moved");
  ASSERT_EQ(metatrain(small(straight) + " steps=4 device=cpu").exit_code, 0);
  ASSERT_EQ(metatrain(small(moved) + " steps=2 device=cuda").exit_code, 0);
  const Result r = metatrain(small(moved) + " steps=4 device=cpu resume=latest");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_LT(rel_diff(params(moved + "/latest.h5"), params(straight + "/latest.h5")), 1e-3);
  const Result back = metatrain(small(moved) + " steps=6 device=cuda resume=latest");
  EXPECT_EQ(back.exit_code, 0) << back.output;
  const Result eval = testing::run_program("metaeval", moved + "/latest.h5 device=cuda");
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("accuracy"), std::string::npos) << eval.output;
}

}  // namespace
}  // namespace mt
