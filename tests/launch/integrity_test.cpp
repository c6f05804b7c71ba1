// Damaged and implausible files as the programs meet them: a checkpoint or store whose bytes fail
// their Fletcher-32 checksum, a checkpoint holding NaN or an out-of-range field, all refused by
// metaeval and by metatrain's resume with exit code 2 and a message naming the file and the
// dataset; and the files of the build before checksums (tests/data/fixtures), still evaluated
// and resumed.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "data/episode_store.h"
#include "tests/support/h5_damage.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using testing::ProgramResult;
using testing::run_program;
using testing::temp_dir;

const std::string kFixtures = std::string(MT_SOURCE_DIR) + "/tests/data/fixtures";

// The settings tests/data/fixtures/checkpoint_pre_checksum.h5 was trained with (its README).
const std::string kFixtureRun =
    "algo=ufom ufom.q=adaptive model.filters=4 meta_batch=2 task.ways=2 task.queries=1 "
    "eval.every=2 eval.episodes=5 checkpoint.every=2 checkpoint.keep=1 threads=2";

bool has(const ProgramResult& r, const std::string& part) {
  return r.output.find(part) != std::string::npos;
}

// A fresh 2-step run of this build in `dir`; returns its checkpoint.
std::string train(const std::string& dir) {
  const ProgramResult r = run_program("metatrain", kFixtureRun + " steps=2 checkpoint.dir=" + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir + "/ckpt_00000002.h5";
}

ProgramResult metaeval(const std::string& ckpt) {
  return run_program("metaeval", ckpt + " eval.episodes=5");
}

ProgramResult resume(const std::string& ckpt, const std::string& dir) {
  return run_program("metatrain",
                     kFixtureRun + " steps=4 checkpoint.dir=" + dir + "/resumed resume=" + ckpt);
}

// Both programs refuse `ckpt` with exit code 2 and a message holding `part`.
void expect_refused(const std::string& ckpt, const std::string& dir, const std::string& part) {
  ProgramResult r = metaeval(ckpt);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, "checkpoint " + ckpt + ": ")) << r.output;
  EXPECT_TRUE(has(r, part)) << "metaeval: " << r.output;
  r = resume(ckpt, dir);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, "checkpoint " + ckpt + ": ")) << r.output;
  EXPECT_TRUE(has(r, part)) << "resume: " << r.output;
  EXPECT_FALSE(has(r, "check failed")) << r.output;
}

void patch(const std::string& path, const std::function<void(h5::File&)>& f) {
  h5::File file = h5::File::open_write(path);
  f(file);
  file.close();
}

TEST(Integrity, DamagedCheckpointBytesAreRefusedByMetaevalAndResume) {
  const std::string dir = temp_dir("integrity_bytes");
  const std::string ckpt = train(dir);
  const std::string tensor = "/params/" + h5::File::open_read(ckpt).list("/params").front();
  testing::flip_chunk_byte(ckpt, tensor, 5);
  expect_refused(ckpt, dir,
                 "dataset " + tensor +
                     " fails its Fletcher-32 checksum: the file is damaged; resume from an "
                     "earlier checkpoint");
}

TEST(Integrity, NonFiniteParametersAreRefusedByMetaevalAndResume) {
  const std::string dir = temp_dir("integrity_nan");
  const std::string ckpt = train(dir);
  std::string tensor;
  patch(ckpt, [&](h5::File& f) {
    tensor = "/params/" + f.list("/params").back();
    std::vector<int64_t> shape;
    std::vector<float> v = f.read<float>(tensor, &shape);
    v[1] = std::numeric_limits<float>::quiet_NaN();
    f.write<float>(tensor, shape, v.data());
  });
  expect_refused(ckpt, dir, tensor + " holds nan at element 1 of ");
}

TEST(Integrity, OutOfRangeFieldsAreRefusedByMetaevalAndResume) {
  // Each damage on the checkpoint of its own fresh run (a fresh run refuses a used folder).
  std::string dir = temp_dir("integrity_fields_step");
  std::string ckpt = train(dir);
  // Once an internal check ("check failed", exit code 1) deep in the trainer.
  patch(ckpt, [](h5::File& f) { f.write_scalar<int64_t>("/state/step", -1); });
  expect_refused(ckpt, dir, "/state/step is -1, expected >= 0");

  dir = temp_dir("integrity_fields_q");
  ckpt = train(dir);
  patch(ckpt, [](h5::File& f) { f.write_scalar<double>("/state/ufom/q", -0.25); });
  expect_refused(ckpt, dir, "/state/ufom/q is -0.25, expected in [0, 1]");

  dir = temp_dir("integrity_fields_config");
  ckpt = train(dir);
  patch(ckpt, [](h5::File& f) { f.write_string("/config", "algo: [unclosed\n"); });
  ProgramResult r = metaeval(ckpt);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, ckpt + ":/config")) << r.output;
  r = resume(ckpt, dir);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, ckpt + ":/config")) << r.output;

  dir = temp_dir("integrity_fields_seed");
  ckpt = train(dir);
  patch(ckpt, [](h5::File& f) { f.write_scalar<uint64_t>("/state/seed", 12345); });
  r = metaeval(ckpt);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, "/state/seed is 12345 but its /config has seed: 0")) << r.output;
}

TEST(Integrity, DamagedStoreChunkIsRefusedNamingFileAndDataset) {
  const std::string dir = temp_dir("integrity_store");
  // The fixture store rewritten by this build (with checksums); its test split is classes 0, 1
  // (Balinese), images 0 to 5: every one of them damaged, so any episode meets one.
  const std::string store = dir + "/store.h5";
  write_store(store, read_store(kFixtures + "/store_pre_checksum.h5"));
  for (hsize_t i = 0; i < 6; ++i) testing::flip_chunk_byte(store, "/images", 3, {i, 0, 0, 0});
  const std::string ckpt = train(dir);
  const ProgramResult r = run_program("metaeval", ckpt + " eval.episodes=5 data.path=" + store);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, store + ": dataset /images fails its Fletcher-32 checksum in rows ["))
      << r.output;
  EXPECT_TRUE(has(r, "the file is damaged; re-pack it with metapack")) << r.output;
}

// The checkpoint and store of the build before checksums still evaluate to what that build
// printed (tests/data/fixtures/README.md), and the checkpoint resumes.
TEST(Integrity, FilesOfTheBuildBeforeChecksumsStillEvaluateAndResume) {
  const std::string dir = temp_dir("integrity_old");
  const std::string ckpt = kFixtures + "/checkpoint_pre_checksum.h5";
  ProgramResult r =
      run_program("metaeval", ckpt + " --json eval.episodes=5 data.path=" + kFixtures +
                                  "/store_pre_checksum.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r, "\"acc_mean\": 0.6")) << r.output;
  EXPECT_TRUE(has(r, "\"step\": 2")) << r.output;

  r = resume(ckpt, dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r, "resuming from " + ckpt + " at step 2")) << r.output;
  const h5::File f = h5::File::open_read(dir + "/resumed/ckpt_00000004.h5");
  EXPECT_EQ(f.read_scalar<int64_t>("/state/step"), 4);
  EXPECT_TRUE(f.has_checksum("/params/" + f.list("/params").front()));
}

// An sl-BAMM checkpoint is not a few-shot model: metaeval says so instead of a missing tensor.
TEST(Integrity, MetaevalRefusesAnSlbammCheckpointSayingWhatItIs) {
  const std::string dir = temp_dir("integrity_slbamm");
  const ProgramResult t = run_program(
      "metatrain", "algo=slbamm slbamm.toy_dim=4 steps=3 log.every=1 checkpoint.dir=" + dir);
  ASSERT_EQ(t.exit_code, 0) << t.output;
  const ProgramResult r = metaeval(dir + "/latest.h5");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, "was written by an algo=slbamm run; metaeval evaluates")) << r.output;
}

}  // namespace
}  // namespace mt
