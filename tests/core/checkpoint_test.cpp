// Tests of the HDF5 wrappers and of checkpoints: bit-exact round trips, the on-disk layout,
// rejection of missing, foreign, truncated, wrong-version and wrong-model files, of damaged
// bytes (Fletcher-32), non-finite tensors and every out-of-range field, rotation by
// CheckpointManager, atomic writes, and the debug dump.
#include "core/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>

#include "core/hdf5.h"
#include "tests/support/h5_damage.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path base = fs::path(MT_BINARY_DIR) / "test_tmp";
    fs::create_directories(base);
    std::string tmpl = (base / "checkpoint_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
};

ParamLayout small_layout(int64_t head_in = 16) {
  ParamLayout l;
  l.add("block1.conv.weight", {4, 1, 3, 3});
  l.add("block1.conv.bias", {4});
  l.add("head.weight", {5, head_in});
  l.add("head.bias", {5});
  return l;
}

std::vector<float> pattern(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * static_cast<float>(i) + 0.1f);
  return v;
}

CheckpointState sample_state() {
  CheckpointState s;
  s.layout = small_layout();
  s.params = pattern(s.layout.total(), 1.0f / 3.0f);
  // Values that a text or double round trip would alter.
  s.params[0] = -0.0f;
  s.params[1] = std::numeric_limits<float>::denorm_min();
  s.params[2] = std::nextafter(1.0f, 2.0f);
  s.optimizer.name = "adam";
  s.optimizer.step = 41;
  std::vector<float> v = pattern(s.layout.total(), 1e-3f);
  for (float& x : v) x = std::fabs(x);  // Adam's second moment is never negative
  s.optimizer.buffers = {{"v", v}, {"m", pattern(s.layout.total(), -0.7f)}};
  s.step = 1234;
  s.seed = 0xFEDCBA9876543210ull;
  s.ufom = {1.0 / 3.0, 2.0 / 7.0, 17, 0.123456789012345};
  s.data_cursor = s.step;  // the trainer's cursor is the step
  s.config_yaml = "algo: ufom\nseed: 7\ntask: {ways: 5, shots: 1}\n# µ-note\n";
  s.world_size = 4;
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The UsageError message of f(), or "" when it throws nothing.
template <typename F>
std::string usage_error(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  const CheckpointState s = sample_state();
  const std::string path = file("ckpt.h5");
  write_checkpoint(path, s);
  const CheckpointState r = read_checkpoint(path, s.layout);

  EXPECT_TRUE(r.layout == s.layout);
  EXPECT_TRUE(same_bits(r.params, s.params));
  EXPECT_TRUE(std::signbit(r.params[0]));
  EXPECT_EQ(r.optimizer.name, "adam");
  EXPECT_EQ(r.optimizer.step, 41);
  ASSERT_EQ(r.optimizer.buffers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(r.optimizer.buffers[i].first, s.optimizer.buffers[i].first);
    EXPECT_TRUE(same_bits(r.optimizer.buffers[i].second, s.optimizer.buffers[i].second));
  }
  EXPECT_EQ(r.step, s.step);
  EXPECT_EQ(r.seed, s.seed);
  EXPECT_TRUE(same_bits(r.ufom.v2_ema, s.ufom.v2_ema));
  EXPECT_TRUE(same_bits(r.ufom.d2_ema, s.ufom.d2_ema));
  EXPECT_EQ(r.ufom.count, s.ufom.count);
  EXPECT_TRUE(same_bits(r.ufom.q, s.ufom.q));
  EXPECT_EQ(r.data_cursor, s.data_cursor);
  EXPECT_EQ(r.config_yaml, s.config_yaml);
  EXPECT_EQ(r.world_size, s.world_size);
}

TEST_F(CheckpointTest, OptimizerWithoutBuffersRoundTrips) {
  CheckpointState s = sample_state();
  s.optimizer = {"sgd", 3, {}};
  s.config_yaml = "";
  write_checkpoint(file("sgd.h5"), s);
  const CheckpointState r = read_checkpoint(file("sgd.h5"), s.layout);
  EXPECT_EQ(r.optimizer.name, "sgd");
  EXPECT_EQ(r.optimizer.step, 3);
  EXPECT_TRUE(r.optimizer.buffers.empty());
  EXPECT_EQ(r.config_yaml, "");
}

TEST_F(CheckpointTest, FileHoldsNamedShapedTensors) {
  const CheckpointState s = sample_state();
  write_checkpoint(file("ckpt.h5"), s);
  const h5::File f = h5::File::open_read(file("ckpt.h5"));

  std::vector<int64_t> shape;
  const std::vector<float> w = f.read<float>("/params/block1.conv.weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_TRUE(same_bits(w, std::vector<float>(s.params.begin(), s.params.begin() + 36)));
  EXPECT_EQ(f.shape("/params/head.weight"), (std::vector<int64_t>{5, 16}));
  EXPECT_EQ(f.shape("/optimizer/m/head.weight"), (std::vector<int64_t>{5, 16}));
  EXPECT_EQ(f.list("/params"), (std::vector<std::string>{"block1.conv.bias", "block1.conv.weight",
                                                         "head.bias", "head.weight"}));
  EXPECT_EQ(f.get_attr_int("/", "format_version"), kCheckpointFormatVersion);
  EXPECT_EQ(f.get_attr_string("/", "created_by"), "metatrain");
  EXPECT_EQ(f.get_attr_string("/optimizer", "name"), "adam");
  EXPECT_EQ(f.get_attr_int("/optimizer", "step"), 41);
  EXPECT_EQ(f.read_scalar<int64_t>("/state/step"), 1234);
  EXPECT_EQ(f.read_scalar<uint64_t>("/state/seed"), 0xFEDCBA9876543210ull);
  EXPECT_EQ(f.read_scalar<int64_t>("/state/ufom/count"), 17);
  EXPECT_EQ(f.read_string("/config"), s.config_yaml);
}

TEST_F(CheckpointTest, RejectsMissingFile) {
  const std::string path = file("nope.h5");
  const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
  EXPECT_NE(msg.find("checkpoint " + path + ":"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsNonHdf5File) {
  const std::string path = file("notes.h5");
  std::ofstream(path) << "step: 100\nthis is not HDF5\n";
  const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an HDF5 file"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsTruncatedFile) {
  write_checkpoint(file("full.h5"), sample_state());
  const std::string bytes = read_bytes(file("full.h5"));
  const std::string path = file("half.h5");
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size() / 2);
  const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
  EXPECT_NE(msg.find("checkpoint " + path + ":"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsOtherFormatVersion) {
  const std::string path = file("v2.h5");
  write_checkpoint(path, sample_state());
  {
    h5::File f = h5::File::open_write(path);
    f.set_attr("/", "format_version", 2);
    f.close();
  }
  const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("format version 2"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsFileWithoutVersion) {
  const std::string path = file("plain.h5");
  {
    h5::File f = h5::File::create(path);
    f.write_scalar<int64_t>("/state/step", 5);
  }
  const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
  EXPECT_NE(msg.find("not a metatrain checkpoint"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsLayoutOfAnotherModel) {
  const std::string path = file("ckpt.h5");
  write_checkpoint(path, sample_state());

  std::string msg = usage_error([&] { read_checkpoint(path, small_layout(8)); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("/params/head.weight has shape [5,16], the model expects [5,8]"),
            std::string::npos)
      << msg;

  ParamLayout bigger = small_layout();
  bigger.add("head2.bias", {5});
  msg = usage_error([&] { read_checkpoint(path, bigger); });
  EXPECT_NE(msg.find("missing /params/head2.bias"), std::string::npos) << msg;

  ParamLayout smaller;
  smaller.add("block1.conv.weight", {4, 1, 3, 3});
  msg = usage_error([&] { read_checkpoint(path, smaller); });
  EXPECT_NE(msg.find("/params/block1.conv.bias is not a parameter of the model"), std::string::npos)
      << msg;
}

TEST_F(CheckpointTest, RejectsCheckpointWithoutState) {
  const std::string path = file("ckpt.h5");
  write_checkpoint(path, sample_state());
  // A file with the version and the parameters but no /state.
  {
    const h5::File in = h5::File::open_read(path);
    h5::File out = h5::File::create(file("nostate.h5"));
    out.set_attr("/", "format_version", kCheckpointFormatVersion);
    for (const std::string& name : in.list("/params"))
      out.write("/params/" + name, in.shape("/params/" + name),
                in.read<float>("/params/" + name).data());
  }
  const std::string msg = usage_error([&] { read_checkpoint(file("nostate.h5"), small_layout()); });
  EXPECT_NE(msg.find("checkpoint " + file("nostate.h5") + ": missing"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, ManagerKeepsNewestAndLatest) {
  const std::string dir = file("run/ckpts");  // created on first save
  CheckpointManager mgr(dir, 2);
  CheckpointState s = sample_state();
  for (int64_t step = 1; step <= 5; ++step) {
    s.step = s.data_cursor = step * 100;
    s.params[3] = static_cast<float>(step);
    EXPECT_EQ(mgr.save(s), mgr.path_for_step(step * 100));
  }
  EXPECT_EQ(mgr.path_for_step(400), (fs::path(dir) / "ckpt_00000400.h5").string());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt_00000400.h5", "ckpt_00000500.h5", "latest.h5"}));
  for (const auto& n : names) EXPECT_EQ(n.find(".tmp."), std::string::npos) << n;

  EXPECT_EQ(mgr.latest_path(), (fs::path(dir) / "latest.h5").string());
  EXPECT_EQ(read_bytes(mgr.latest_path()), read_bytes(mgr.path_for_step(500)));
  const CheckpointState r = read_checkpoint(mgr.latest_path(), s.layout);
  EXPECT_EQ(r.step, 500);
  EXPECT_TRUE(same_bits(r.params, s.params));
}

TEST_F(CheckpointTest, ManagerRejectsBadSettings) {
  EXPECT_THROW(CheckpointManager(dir_, 0), UsageError);
  EXPECT_THROW(CheckpointManager("", 1), UsageError);
}

TEST_F(CheckpointTest, UnwritableDirectoryIsUsageError) {
  std::string msg =
      usage_error([] { CheckpointManager("/proc/forbidden", 1).save(sample_state()); });
  EXPECT_NE(msg.find("/proc/forbidden"), std::string::npos) << msg;
  msg = usage_error([] { write_checkpoint("/proc/forbidden/ckpt.h5", sample_state()); });
  EXPECT_NE(msg.find("/proc/forbidden"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, FailedWriteLeavesPreviousFileAndNoTemp) {
  const std::string path = file("ckpt.h5");
  const CheckpointState good = sample_state();
  write_checkpoint(path, good);
  CheckpointState bad = good;
  bad.params.pop_back();  // size no longer matches the layout: fails mid-write
  EXPECT_THROW(write_checkpoint(path, bad), Error);
  EXPECT_EQ(read_checkpoint(path, good.layout).step, good.step);
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(CheckpointTest, DebugDumpHoldsEpisodesAndGradients) {
  const ParamLayout layout = small_layout();
  const std::vector<float> theta = pattern(layout.total(), 0.5f);
  std::vector<DumpTask> tasks(2);
  for (int t = 0; t < 2; ++t) {
    Episode<float>& e = tasks[t].episode;
    e.ways = 2;
    e.support.resize({1, 4, 4}, 2);
    e.query.resize({1, 4, 4}, 6);
    e.support.x = pattern(2 * 16, 1.0f + t);
    e.support.y = {0, 1};
    e.query.x = pattern(6 * 16, 2.0f + t);
    e.query.y = {1, 0, 1, 0, 1, t};
    tasks[t].g_fo = pattern(layout.total(), 0.01f * (t + 1));
    tasks[t].g_exact = pattern(layout.total(), 0.02f * (t + 1));
  }
  const std::string path = file("dump/first_step.h5");
  write_debug_dump(path, layout, theta, tasks, "algo: maml\n", 0.4, 3);

  const h5::File f = h5::File::open_read(path);
  EXPECT_EQ(f.list("/tasks"), (std::vector<std::string>{"0", "1"}));
  std::vector<int64_t> shape;
  EXPECT_TRUE(same_bits(f.read<float>("/tasks/1/query_x", &shape), tasks[1].episode.query.x));
  EXPECT_EQ(shape, (std::vector<int64_t>{6, 1, 4, 4}));
  EXPECT_EQ(f.read<int32_t>("/tasks/1/query_y"), tasks[1].episode.query.y);
  EXPECT_EQ(f.shape("/tasks/0/support_x"), (std::vector<int64_t>{2, 1, 4, 4}));
  EXPECT_EQ(f.read<int32_t>("/tasks/0/support_y"), (std::vector<int32_t>{0, 1}));
  EXPECT_TRUE(same_bits(f.read<float>("/tasks/0/g_fo", &shape), tasks[0].g_fo));
  EXPECT_EQ(shape, (std::vector<int64_t>{layout.total()}));
  EXPECT_TRUE(same_bits(f.read<float>("/tasks/1/g_exact"), tasks[1].g_exact));
  EXPECT_TRUE(same_bits(f.read<float>("/params/head.bias"),
                        std::vector<float>(theta.end() - 5, theta.end())));
  EXPECT_EQ(f.read_strings("/layout/names"),
            (std::vector<std::string>{"block1.conv.weight", "block1.conv.bias", "head.weight",
                                      "head.bias"}));
  EXPECT_EQ(f.read<int64_t>("/layout/offsets"), (std::vector<int64_t>{0, 36, 40, 120}));
  EXPECT_EQ(f.read_string("/config"), "algo: maml\n");
  EXPECT_EQ(f.get_attr_double("/", "inner_lr"), 0.4);
  EXPECT_EQ(f.get_attr_int("/", "inner_steps"), 3);
}

TEST_F(CheckpointTest, H5TypeAndPathErrorsNameFileAndDataset) {
  const std::string path = file("t.h5");
  {
    h5::File f = h5::File::create(path);
    const std::vector<float> v = {1, 2, 3};
    f.write("/a/b/values", {3}, v.data());
  }
  const h5::File f = h5::File::open_read(path);
  std::string msg = usage_error([&] { f.read<double>("/a/b/values"); });
  EXPECT_NE(msg.find(path + ": dataset /a/b/values holds float32, expected float64"),
            std::string::npos)
      << msg;
  msg = usage_error([&] { f.read<int32_t>("a/missing"); });
  EXPECT_NE(msg.find(path + ": missing dataset /a/missing"), std::string::npos) << msg;
  msg = usage_error([&] { f.read<float>("/a/b"); });
  EXPECT_NE(msg.find("/a/b is not a dataset"), std::string::npos) << msg;
  msg = usage_error([&] { f.read_scalar<float>("/a/b/values"); });
  EXPECT_NE(msg.find("holds 3 values, expected one"), std::string::npos) << msg;
  msg = usage_error([&] { f.get_attr_int("/a", "nope"); });
  EXPECT_NE(msg.find("missing attribute nope on /a"), std::string::npos) << msg;
  EXPECT_FALSE(f.exists("/a/b/values/deeper"));
  EXPECT_FALSE(f.exists("/x/y"));
  EXPECT_TRUE(f.exists("a/b/"));
  EXPECT_THROW(f.list("/x"), UsageError);
}

TEST_F(CheckpointTest, H5CheckReportsCallAndLibraryMessage) {
  write_checkpoint(file("c.h5"), sample_state());
  const h5::File f = h5::File::open_read(file("c.h5"));
  try {
    MT_H5_CHECK(H5Dopen2(H5I_INVALID_HID, "/params", H5P_DEFAULT));
    FAIL() << "no exception";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    EXPECT_NE(msg.find("checkpoint_test.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("H5Dopen2(H5I_INVALID_HID"), std::string::npos) << msg;
    EXPECT_NE(msg.find("H5Dopen2(): "), std::string::npos) << msg;
  }
}

TEST_F(CheckpointTest, H5StringsAttributesRowsAndChunks) {
  const std::string path = file("misc.h5");
  std::vector<uint8_t> images(10 * 3 * 2);
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>(i * 7);
  {
    h5::File f = h5::File::create(path);
    f.write("/images", {10, 3, 2}, images.data(), {{1, 3, 2}, 4});
    f.write_strings("/class_names", {"alpha", "", "gamma/δ"});
    f.write_scalar<double>("/pi", 3.141592653589793);
    f.set_attr("/", "dataset", "glyphs");
    f.set_attr("/", "image_shape", std::vector<int64_t>{28, 28, 1});
    f.set_attr("/images", "scale", 0.5);
    f.set_attr("/images", "scale", 0.25);  // replaces
    f.flush();
  }
  const h5::File f = h5::File::open_read(path);
  std::vector<uint8_t> rows(2 * 6);
  f.read_rows("/images", 7, 2, rows.data());
  EXPECT_EQ(rows, std::vector<uint8_t>(images.begin() + 42, images.begin() + 54));
  EXPECT_THROW(f.read_rows("/images", 9, 2, rows.data()), UsageError);
  EXPECT_EQ(f.read<uint8_t>("/images"), images);
  EXPECT_EQ(f.read_strings("/class_names"), (std::vector<std::string>{"alpha", "", "gamma/δ"}));
  EXPECT_EQ(f.read_scalar<double>("/pi"), 3.141592653589793);
  EXPECT_EQ(f.shape("/pi"), std::vector<int64_t>{1});  // one element, so that it has a checksum
  EXPECT_EQ(f.get_attr_string("/", "dataset"), "glyphs");
  EXPECT_EQ(f.get_attr_ints("/", "image_shape"), (std::vector<int64_t>{28, 28, 1}));
  EXPECT_EQ(f.get_attr_double("/images", "scale"), 0.25);
  EXPECT_TRUE(f.has_attr("/images", "scale"));
  EXPECT_FALSE(f.has_attr("/nothing", "scale"));
}

TEST_F(CheckpointTest, EveryDatasetCarriesAChecksum) {
  write_checkpoint(file("c.h5"), sample_state());
  const h5::File f = h5::File::open_read(file("c.h5"));
  std::vector<std::string> datasets = {"/config"};
  for (const char* g : {"/params", "/optimizer/m", "/optimizer/v"})
    for (const std::string& n : f.list(g)) datasets.push_back(std::string(g) + "/" + n);
  for (const char* n : {"step", "seed", "data_cursor", "world_size", "grad_evals", "ufom/v2_ema",
                        "ufom/d2_ema", "ufom/count", "ufom/q"})
    datasets.push_back(std::string("/state/") + n);
  EXPECT_EQ(datasets.size(), 1u + 3 * 4 + 9);
  for (const std::string& d : datasets) EXPECT_TRUE(f.has_checksum(d)) << d;
}

TEST_F(CheckpointTest, DamagedTensorBytesFailTheirChecksum) {
  const std::string path = file("ckpt_00000010.h5");
  for (const std::string& dataset :
       {std::string("/params/block1.conv.weight"), std::string("/optimizer/v/head.weight"),
        std::string("/state/step"), std::string("/config")}) {
    write_checkpoint(path, sample_state());
    testing::flip_chunk_byte(path, dataset, 2);
    const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
    EXPECT_EQ(msg, "checkpoint " + path + ": dataset " + dataset +
                       " fails its Fletcher-32 checksum: the file is damaged; resume from an "
                       "earlier checkpoint")
        << msg;
  }
  // The config is read first by metaeval.
  const std::string msg = usage_error([&] { read_checkpoint_config(path); });
  EXPECT_NE(msg.find("dataset /config fails its Fletcher-32 checksum"), std::string::npos) << msg;
  try {
    read_checkpoint(path, small_layout());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
  }
}

TEST_F(CheckpointTest, NonFiniteTensorsAreRefusedNamingTheTensor) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  CheckpointState s = sample_state();
  s.params[36 + 4 + 7] = nan;  // head.weight element 7
  write_checkpoint(file("nan.h5"), s);
  std::string msg = usage_error([&] { read_checkpoint(file("nan.h5"), small_layout()); });
  EXPECT_EQ(msg, "checkpoint " + file("nan.h5") +
                     ": /params/head.weight holds nan at element 7 of 80; the file is damaged; "
                     "resume from an earlier checkpoint")
      << msg;

  s = sample_state();
  s.optimizer.buffers[1].second[36] = -inf;  // m, block1.conv.bias element 0
  write_checkpoint(file("inf.h5"), s);
  msg = usage_error([&] { read_checkpoint(file("inf.h5"), small_layout()); });
  EXPECT_NE(msg.find("/optimizer/m/block1.conv.bias holds -inf at element 0 of 4"),
            std::string::npos)
      << msg;

  s = sample_state();
  s.optimizer.buffers[0].second[3] = -1e-3f;  // Adam's v is an average of squares
  write_checkpoint(file("v.h5"), s);
  msg = usage_error([&] { read_checkpoint(file("v.h5"), small_layout()); });
  EXPECT_NE(msg.find("/optimizer/v/block1.conv.weight holds -0.001 at element 3 of 36 (it must "
                     "be >= 0)"),
            std::string::npos)
      << msg;
}

// Writes a valid checkpoint, lets `patch` change one field, and returns read_checkpoint's error.
std::string patched_error(const std::string& path, const std::function<void(h5::File&)>& patch) {
  write_checkpoint(path, sample_state());
  {
    h5::File f = h5::File::open_write(path);
    patch(f);
    f.close();
  }
  return usage_error([&] { read_checkpoint(path, small_layout()); });
}

TEST_F(CheckpointTest, EveryOutOfRangeFieldIsRefusedNamingFieldAndValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Case {
    std::function<void(h5::File&)> patch;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](h5::File& f) { f.write_scalar<int64_t>("/state/step", -5); },
       "/state/step is -5, expected >= 0"},
      {[](h5::File& f) { f.set_attr("/optimizer", "step", int64_t{1235}); },
       "attribute step of /optimizer is 1235, expected 0 to /state/step = 1234"},
      {[](h5::File& f) { f.set_attr("/optimizer", "step", int64_t{-1}); },
       "attribute step of /optimizer is -1"},
      {[](h5::File& f) { f.set_attr("/optimizer", "name", ""); },
       "attribute name of /optimizer is empty"},
      {[](h5::File& f) { f.set_attr("/optimizer", "buffers", "v,v"); },
       "attribute buffers of /optimizer names buffer 'v' (empty, repeated or holding '/')"},
      {[](h5::File& f) { f.set_attr("/optimizer", "buffers", "v,"); },
       "attribute buffers of /optimizer names buffer ''"},
      {[](h5::File& f) { f.write_scalar<int64_t>("/state/data_cursor", 99); },
       "/state/data_cursor is 99, expected /state/step = 1234"},
      {[](h5::File& f) { f.write_scalar<int64_t>("/state/world_size", 0); },
       "/state/world_size is 0, expected 1 to 2^30"},
      {[](h5::File& f) { f.write_scalar<int64_t>("/state/grad_evals", -3); },
       "/state/grad_evals is -3, expected >= 0"},
      {[nan](h5::File& f) { f.write_scalar<double>("/state/ufom/v2_ema", nan); },
       "/state/ufom/v2_ema is nan, expected a finite number >= 0"},
      {[](h5::File& f) { f.write_scalar<double>("/state/ufom/d2_ema", -0.5); },
       "/state/ufom/d2_ema is -0.5, expected a finite number >= 0"},
      {[](h5::File& f) { f.write_scalar<int64_t>("/state/ufom/count", -1); },
       "/state/ufom/count is -1, expected >= 0"},
      {[](h5::File& f) { f.write_scalar<double>("/state/ufom/q", 1.5); },
       "/state/ufom/q is 1.5, expected in [0, 1]"},
      {[nan](h5::File& f) { f.write_scalar<double>("/state/ufom/q", nan); },
       "/state/ufom/q is nan, expected in [0, 1]"},
      {[](h5::File& f) { f.set_attr("/", "format_version", 0); }, "format version 0"},
      // Types and shapes.
      {[](h5::File& f) { f.write_scalar<double>("/state/step", 3.0); },
       "dataset /state/step holds float64, expected int64"},
      {[](h5::File& f) {
         const int64_t two[] = {1, 2};
         f.write<int64_t>("/state/step", {2}, two);
       },
       "dataset /state/step holds 2 values, expected one"},
      {[](h5::File& f) { f.set_attr("/optimizer", "step", 2.5); },
       "attribute step on /optimizer holds float64, expected a integer"},
      {[](h5::File& f) {
         const std::vector<int32_t> w(36, 1);
         f.write<int32_t>("/params/block1.conv.weight", {4, 1, 3, 3}, w.data());
       },
       "dataset /params/block1.conv.weight holds int32, expected float32"},
      {[](h5::File& f) {
         const std::vector<float> w(36, 1);
         f.write<float>("/optimizer/m/block1.conv.weight", {36}, w.data());
       },
       "/optimizer/m/block1.conv.weight has shape [36], the model expects [4,1,3,3]"},
      {[](h5::File& f) { f.write_scalar<int64_t>("/config", 1); },
       "dataset /config holds int64, expected strings"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = file("field" + std::to_string(i) + ".h5");
    const std::string msg = patched_error(path, cases[i].patch);
    EXPECT_EQ(msg.rfind("checkpoint " + path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(cases[i].expected), std::string::npos) << "case " << i << ": " << msg;
  }
}

TEST_F(CheckpointTest, H5ScalarsAndStringsAreChunkedOneElementDatasets) {
  const std::string path = file("s.h5");
  {
    h5::File f = h5::File::create(path);
    f.write_scalar<int64_t>("/n", 7);
    f.write_string("/empty", "");
    f.write_strings("/none", {});
    const float one = 1;
    f.write<float>("/true_scalar", {}, &one);
    const std::vector<float> big(5 << 20, 0.5f);  // 20 MiB: two chunks of at most 16 MiB
    f.write<float>("/big", {5, 1 << 20}, big.data());
  }
  // [5, 2^20] floats in chunks of 3 rows (12 MiB and the checksum).
  EXPECT_EQ(testing::chunk_location(path, "/big", {0, 0}).second, (hsize_t{12} << 20) + 4);
  EXPECT_NO_THROW(testing::chunk_location(path, "/big", {3, 0}));
  const h5::File f = h5::File::open_read(path);
  EXPECT_EQ(f.shape("/n"), std::vector<int64_t>{1});
  EXPECT_EQ(f.read_scalar<int64_t>("/n"), 7);
  EXPECT_TRUE(f.has_checksum("/n"));
  EXPECT_EQ(f.read_string("/empty"), "");
  EXPECT_TRUE(f.read_strings("/none").empty());
  EXPECT_FALSE(f.has_checksum("/none"));         // nothing stored
  EXPECT_FALSE(f.has_checksum("/true_scalar"));  // a scalar cannot be chunked
  EXPECT_EQ(f.read_scalar<float>("/true_scalar"), 1.0f);
  EXPECT_TRUE(f.has_checksum("/big"));
  EXPECT_EQ(f.read<float>("/big")[(5 << 20) - 1], 0.5f);
}

// Found by tests/fuzz/fuzz_checkpoint's design (regressions/checkpoint/huge-*): the reader once
// read tensors and one-value fields whole before checking their size.
TEST_F(CheckpointTest, HugeDeclaredDatasetsAreRefusedBeforeAnyAllocation) {
  const hsize_t huge = hsize_t{1} << 40;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/params/head.weight", "/params/head.weight has shape [1099511627776], the model expects"},
      {"/state/step", "dataset /state/step holds 1099511627776 values, expected one"},
      {"/config", "dataset /config holds 1099511627776 values, expected one"}};
  for (const auto& [name, expected] : cases) {
    const std::string path = file("huge.h5");
    write_checkpoint(path, sample_state());
    testing::declare_unwritten(path, name, {huge},
                               name == "/params/head.weight" ? H5T_IEEE_F32LE : H5T_STD_I64LE);
    const std::string msg = usage_error([&] { read_checkpoint(path, small_layout()); });
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
  }
}

// No single damaged byte anywhere in a checkpoint changes what is read: data chunks carry
// Fletcher-32 and the 1.10 file format checksums the metadata (superblock, object headers with
// the attributes, B-trees, heaps), so every flip of every byte is either a UsageError or reads
// back exactly the written state (a byte HDF5 never reads: padding, free space).
TEST_F(CheckpointTest, NoSingleDamagedByteChangesAValueSilently) {
  const std::string path = file("whole.h5");
  const CheckpointState s = sample_state();
  write_checkpoint(path, s);
  std::vector<char> bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(bytes.size(), 1000u);
  auto same = [&](const CheckpointState& r) {
    bool eq = r.params.size() == s.params.size() &&
              std::memcmp(r.params.data(), s.params.data(), s.params.size() * 4) == 0;
    eq = eq && r.optimizer.name == s.optimizer.name && r.optimizer.step == s.optimizer.step &&
         r.optimizer.buffers.size() == s.optimizer.buffers.size();
    for (size_t b = 0; eq && b < s.optimizer.buffers.size(); ++b)
      eq = r.optimizer.buffers[b].first == s.optimizer.buffers[b].first &&
           std::memcmp(r.optimizer.buffers[b].second.data(), s.optimizer.buffers[b].second.data(),
                       s.params.size() * 4) == 0;
    return eq && r.step == s.step && r.seed == s.seed && r.data_cursor == s.data_cursor &&
           r.world_size == s.world_size && r.grad_evals == s.grad_evals &&
           r.config_yaml == s.config_yaml && r.ufom.v2_ema == s.ufom.v2_ema &&
           r.ufom.d2_ema == s.ufom.d2_ema && r.ufom.count == s.ufom.count && r.ufom.q == s.ufom.q;
  };
  const std::string damaged = file("damaged.h5");
  int refused = 0, unchanged = 0;
  std::vector<size_t> silent;
  for (size_t off = 0; off < bytes.size(); ++off) {
    bytes[off] ^= static_cast<char>(0xFF);
    std::ofstream(damaged, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
    bytes[off] ^= static_cast<char>(0xFF);
    try {
      if (same(read_checkpoint(damaged, small_layout())))
        ++unchanged;
      else
        silent.push_back(off);
    } catch (const UsageError&) {
      ++refused;
    }
  }
  EXPECT_TRUE(silent.empty()) << silent.size() << " flipped bytes changed the state read, first at "
                              << silent.front();
  EXPECT_GT(refused, static_cast<int>(bytes.size() * 9 / 10)) << unchanged << " unchanged";
}

// Found by tests/fuzz/fuzz_checkpoint (regressions/checkpoint/ascii-vlen-config): a /config
// written by another tool as a variable-length ASCII string (HDF5 converts no character sets).
TEST_F(CheckpointTest, ConfigAsAVariableLengthAsciiStringIsRead) {
  const std::string path = file("ascii.h5");
  write_checkpoint(path, sample_state());
  const std::string text = "algo: ufom\nseed: 7\n";
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    H5Ldelete(f, "/config", H5P_DEFAULT);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);  // cset stays H5T_CSET_ASCII
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t ds = H5Dcreate2(f, "/config", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char* p = text.c_str();
    EXPECT_GE(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Tclose(type);
    H5Fclose(f);
  }
  EXPECT_EQ(read_checkpoint_config(path), text);
}

}  // namespace
}  // namespace mt
