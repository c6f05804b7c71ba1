// Errors for the whole framework: one exception type carrying an exit code, and check macros
// that capture file:line and the failing expression. Library code throws; only programs in
// launch/ catch, print and exit (2 = bad usage/config/data, 1 = runtime failure).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mt {

enum class ExitCode : int { kOk = 0, kRuntime = 1, kUsage = 2 };

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

// Bad input from the user (config, data file, command line): exit code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(ExitCode::kUsage, message) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mt

// Internal invariant: a failure is a bug or a runtime fault (exit code 1).
#define MT_CHECK(cond, ...)                                                               \
  do {                                                                                    \
    if (!(cond))                                                                          \
      throw ::mt::Error(::mt::ExitCode::kRuntime,                                         \
                        ::mt::detail::concat(__FILE__, ":", __LINE__, ": check `", #cond, \
                                             "` failed: ", ##__VA_ARGS__));               \
  } while (0)

// User-facing validation: the message must name the offending key/file and say what to do.
#define MT_REQUIRE(cond, ...)                                               \
  do {                                                                      \
    if (!(cond)) throw ::mt::UsageError(::mt::detail::concat(__VA_ARGS__)); \
  } while (0)
