// Reading a metatrain checkpoint's parameters in tests that compare runs bit for bit (resume,
// rank counts, signals, devices): every /params tensor, in name order, flattened.
#pragma once

#include <string>
#include <vector>

#include "core/hdf5.h"

namespace mt::testing {

inline std::vector<float> checkpoint_params(const std::string& path) {
  const auto f = h5::File::open_read(path);
  std::vector<float> all;
  for (const std::string& name : f.list("/params")) {
    const std::vector<float> p = f.read<float>("/params/" + name);
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

}  // namespace mt::testing
