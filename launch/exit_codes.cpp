// Error-to-exit-code mapping of the programs (launch/exit_codes.h).
#include "launch/exit_codes.h"

#include <cstdio>
#include <exception>

#include "core/check.h"

namespace mt {

int guarded_main(const char* program, const char* usage_hint, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    if (usage_hint != nullptr) std::fprintf(stderr, "%s\n", usage_hint);
    return static_cast<int>(ExitCode::kUsage);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: fatal: %s\n", program, e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: fatal: %s\n", program, e.what());
    return static_cast<int>(ExitCode::kRuntime);
  }
}

}  // namespace mt
