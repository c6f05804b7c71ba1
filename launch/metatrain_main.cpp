// metatrain: meta-trains a model (MAML, FOMAML, UFOM) from a YAML config plus key=value
// overrides. With no arguments: Conv-4 on the built-in synthetic glyphs, on the CPU.
#include <cstdio>
#include <exception>
#include <string_view>

#include "core/check.h"
#include "core/cpu_kernels.h"
#include "launch/config.h"
#include "launch/exit_codes.h"
#include "launch/trainer.h"

namespace {
void usage() {
  std::printf(
      "usage: metatrain [--config FILE] [key=value ...]\n\n"
      "Meta-trains Conv-4 or ResNet-12 with MAML, FOMAML, UFOM (or sl-BAMM). Every key below\n"
      "can be set in FILE or overridden on the command line with its dotted name, e.g.\n"
      "algo=ufom ufom.q=adaptive inner.steps=5. Exit codes: 0 ok, 2 bad usage/config/data,\n"
      "1 runtime failure.\n\n"
      "Keys and defaults:\n\n%.*s",
      static_cast<int>(mt::default_config_yaml().size()), mt::default_config_yaml().data());
}
}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("metatrain", "(run metatrain --help for the keys)", [&] {
    if (mt::has_help_flag(argc, argv)) {
      usage();
      return 0;
    }
    mt::print_cpu_kernels_line();
    const mt::Config cfg = mt::config_from_args(argc, argv);
    mt::train(cfg);
    return 0;
  });
}
