// Progress bar / plain progress lines (launch/progress.h).
#include "launch/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace mt {

namespace {
std::string clock_text(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return buf;
}
}  // namespace

Progress::Progress(int64_t total, int64_t every, bool enabled, std::string unit)
    : total_(total),
      every_(every),
      unit_(std::move(unit)),
      enabled_(enabled),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done, const std::string& status, double fraction) {
  if (!enabled_) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = fraction > 0 ? elapsed / fraction * (1 - std::min(fraction, 1.0))
                     : done > 0   ? elapsed / done * (total_ - done)
                                  : 0.0;
  if (tty_) {
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld %s  %s<%s ", bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), status.c_str(), clock_text(elapsed).c_str(),
                 clock_text(eta).c_str());
    std::fflush(stderr);
    dirty_ = true;
  } else if (done == total_ || done % every_ == 0) {
    std::fprintf(stderr, "%s %lld/%lld %s elapsed %s eta %s\n", unit_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), status.c_str(),
                 clock_text(elapsed).c_str(), clock_text(eta).c_str());
  }
}

void Progress::finish_line() {
  if (dirty_) std::fputc('\n', stderr);
  dirty_ = false;
}

}  // namespace mt
