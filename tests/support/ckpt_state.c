/* ckpt_state CHECKPOINT.h5 [--step]: prints a metatrain checkpoint's training state as text, so
 * that two checkpoints can be compared bit for bit with cmp: every dataset under /params,
 * /optimizer and /state but /state/world_size, as its raw bytes in hex, in name order, and the
 * optimizer's step; no config, no timestamps. --step prints /state/step only. Exit 1 on error. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dump_dataset(hid_t file, const char* name) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  if (d < 0) return -1;
  hid_t ftype = H5Dget_type(d), space = H5Dget_space(d);
  hid_t mtype = H5Tget_native_type(ftype, H5T_DIR_ASCEND);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  const size_t size = H5Tget_size(mtype), bytes = (size_t)n * size;
  unsigned char* buf = malloc(bytes ? bytes : 1);
  int rc = (buf && n >= 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) ? 0 : -1;
  if (rc == 0) {
    printf("/%s %zu x %lld\n", name, size, (long long)n);
    for (size_t i = 0; i < bytes; ++i) printf("%02x%s", buf[i], (i % 32 == 31 || i + 1 == bytes) ? "\n" : "");
  }
  free(buf);
  H5Tclose(mtype);
  H5Tclose(ftype);
  H5Sclose(space);
  H5Dclose(d);
  return rc;
}

static herr_t visit(hid_t file, const char* name, const H5L_info_t* info, void* failed) {
  (void)info;
  const int wanted = strncmp(name, "params/", 7) == 0 || strncmp(name, "optimizer/", 10) == 0 ||
                     (strncmp(name, "state/", 6) == 0 && strcmp(name, "state/world_size") != 0);
  if (!wanted) return 0;
  H5O_info_t oinfo;
  if (H5Oget_info_by_name(file, name, &oinfo, H5P_DEFAULT) < 0) return -1;
  if (oinfo.type != H5O_TYPE_DATASET) return 0;
  if (dump_dataset(file, name) != 0) {
    fprintf(stderr, "ckpt_state: cannot read dataset /%s\n", name);
    *(int*)failed = 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ckpt_state CHECKPOINT.h5 [--step]\n");
    return 2;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t file = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) {
    fprintf(stderr, "ckpt_state: %s: cannot open as HDF5\n", argv[1]);
    return 1;
  }
  int failed = 0;
  if (argc > 2 && strcmp(argv[2], "--step") == 0) {
    long long step = -1;
    hid_t d = H5Dopen2(file, "/state/step", H5P_DEFAULT);
    failed = d < 0 || H5Dread(d, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, &step) < 0;
    if (d >= 0) H5Dclose(d);
    if (!failed) printf("%lld\n", step);
  } else {
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit, &failed) < 0) failed = 1;
    long long opt_step = 0;
    hid_t a = H5Aopen_by_name(file, "/optimizer", "step", H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_LLONG, &opt_step) < 0) failed = 1;
    if (a >= 0) H5Aclose(a);
    printf("/optimizer@step %lld\n", opt_step);
  }
  H5Fclose(file);
  if (failed) fprintf(stderr, "ckpt_state: %s: incomplete\n", argv[1]);
  return failed ? 1 : 0;
}
