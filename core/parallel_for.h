// One parallel loop for the CPU side: f(i) for i in [0, n) on `threads` OpenMP threads, one
// index at a time (dynamic schedule), and the first exception any call throws rethrown on the
// caller's thread once the loop is done (an exception must not leave an OpenMP region).
#pragma once

#include <omp.h>

#include <cstdint>
#include <exception>

namespace mt {

template <typename F>
void parallel_for(int threads, int64_t n, F f) {
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    try {
      f(i);
    } catch (...) {
#pragma omp critical
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace mt
