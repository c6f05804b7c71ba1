// Files that appear complete or not at all (checkpoints, episode stores): content is written
// under "<path>.tmp.<pid>", fsync'd, and renamed into place, so a crash or kill at any moment
// leaves either the previous file or the new one, never a half-written file under the name.
#pragma once

#include <functional>
#include <string>

#include "core/hdf5.h"

namespace mt {

// "<path>.tmp.<pid>".
std::string temp_name(const std::string& path);
// Creates `dir` and its parents; UsageError naming it when that is impossible.
void ensure_directory(const std::string& dir);
// fsync(2) of a file or a directory (directories: where the file system allows it).
void fsync_path(const std::string& path, bool is_dir);

// Creates the parent folder, lets `fill` write a new HDF5 file under the temporary name,
// closes and fsyncs it, renames it to `path` and fsyncs the folder. On any failure the
// temporary file is removed and the exception rethrown; an existing `path` is untouched.
// Test hook: MT_TEST_WRITE_DELAY_MS=<ms> pauses between the fsync and the rename, so tests
// can kill a process while a file is being written.
void write_atomically(const std::string& path, const std::function<void(h5::File&)>& fill);

}  // namespace mt
