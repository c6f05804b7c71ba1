// Atomic file writes (core/atomic_file.h).
#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "core/check.h"

namespace mt {

namespace fs = std::filesystem;

void ensure_directory(const std::string& dir_name) {
  const fs::path dir(dir_name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw UsageError(detail::concat("cannot create directory ", dir.string(), ": ",
                                    ec ? ec.message() : "a file of that name exists",
                                    "; choose a writable location"));
}

void fsync_path(const std::string& path, bool is_dir) {
  const int fd = open(path.c_str(), O_RDONLY | (is_dir ? O_DIRECTORY : 0));
  MT_CHECK(fd >= 0, "cannot open ", path, " to fsync it: ", std::strerror(errno));
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  // Some file systems refuse fsync on directories; the rename is then as durable as they allow.
  MT_CHECK(rc == 0 || (is_dir && err == EINVAL), "fsync of ", path,
           " failed: ", std::strerror(err));
}

std::string temp_name(const std::string& path) {
  return detail::concat(path, ".tmp.", static_cast<long>(getpid()));
}

void write_atomically(const std::string& path, const std::function<void(h5::File&)>& fill) {
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  ensure_directory(dir.string());
  const std::string tmp = temp_name(path);
  try {
    h5::File f = h5::File::create(tmp);
    fill(f);
    f.close();
    fsync_path(tmp, false);
    if (const char* ms = std::getenv("MT_TEST_WRITE_DELAY_MS"))
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw UsageError(detail::concat("cannot rename ", tmp, " to ", path, ": ",
                                      std::strerror(errno), "; check permissions of ",
                                      dir.string()));
    fsync_path(dir.string(), true);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

}  // namespace mt
