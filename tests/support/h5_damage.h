// Damaging HDF5 files the way a disk or a copy would, for tests of the readers' checks: flip one
// stored byte inside a dataset's chunk (found with H5Dget_chunk_info), or replace a value.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mt::testing {

// File offset and stored size of the chunk of `dataset` that holds element `coord` (all zeros:
// the first chunk). Throws std::runtime_error when the dataset is not chunked or has no chunk
// there.
inline std::pair<haddr_t, hsize_t> chunk_location(const std::string& path,
                                                  const std::string& dataset,
                                                  std::vector<hsize_t> coord = {}) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) throw std::runtime_error("cannot open " + path);
  const hid_t ds = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
  const hid_t space = ds >= 0 ? H5Dget_space(ds) : -1;
  if (space >= 0 && coord.empty())
    coord.assign(static_cast<size_t>(H5Sget_simple_extent_ndims(space)), 0);
  unsigned mask = 0;
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  const herr_t r = ds >= 0 ? H5Dget_chunk_info_by_coord(ds, coord.data(), &mask, &addr, &size) : -1;
  if (space >= 0) H5Sclose(space);
  if (ds >= 0) H5Dclose(ds);
  H5Fclose(file);
  if (r < 0 || addr == HADDR_UNDEF) throw std::runtime_error(dataset + " has no chunk there");
  return {addr, size};
}

// Inverts the bits of stored byte `byte` of that chunk (its data, not its checksum, when byte <
// size - 4).
inline void flip_chunk_byte(const std::string& path, const std::string& dataset, hsize_t byte,
                            std::vector<hsize_t> coord = {}) {
  const auto [addr, size] = chunk_location(path, dataset, std::move(coord));
  if (byte >= size) throw std::runtime_error("byte outside the chunk of " + dataset);
  FILE* f = std::fopen(path.c_str(), "r+b");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::fseek(f, static_cast<long>(addr + byte), SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, static_cast<long>(addr + byte), SEEK_SET);
  std::fputc(c ^ 0xFF, f);
  std::fclose(f);
}

// Replaces dataset `name` of the file at `path` by one of `dims` that is declared but never
// written: the file stays a few bytes larger whatever the declared size (for readers that must
// check sizes before allocating). Throws std::runtime_error when HDF5 refuses.
inline void declare_unwritten(const std::string& path, const std::string& name,
                              const std::vector<hsize_t>& dims, hid_t type) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) throw std::runtime_error("cannot open " + path);
  H5Ldelete(file, name.c_str(), H5P_DEFAULT);
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const std::vector<hsize_t> chunk(dims.size(), 1);
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  const hid_t ds = H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds >= 0) H5Dclose(ds);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(file);
  if (ds < 0) throw std::runtime_error("cannot declare " + name + " in " + path);
}

}  // namespace mt::testing
