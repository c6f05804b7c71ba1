// params_digest CHECKPOINT...: one line per checkpoint, "<64-bit FNV-1a of its parameters>
// <count> <path>", the parameters read as tests/support/checkpoints.h reads them (every /params
// tensor in name order, float32 bits). The shell suites (tests/dist/multinode_test.sh,
// tests/slurm/slurm_test.sh) compare runs bit for bit with it. Exit 1 on an unreadable file.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>

#include "tests/support/checkpoints.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: params_digest CHECKPOINT.h5...\n");
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; ++i) {
    try {
      const std::vector<float> p = mt::testing::checkpoint_params(argv[i]);
      uint64_t h = 1469598103934665603ull;
      for (float x : p) {
        uint32_t bits = 0;
        std::memcpy(&bits, &x, sizeof bits);
        for (int b = 0; b < 4; ++b) h = (h ^ ((bits >> (8 * b)) & 0xff)) * 1099511628211ull;
      }
      std::printf("%016" PRIx64 " %zu %s\n", h, p.size(), argv[i]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "params_digest: %s: %s\n", argv[i], e.what());
      status = 1;
    }
  }
  return status;
}
