// JSONL metrics log (launch/metrics_log.h): JsonObject over nlohmann::ordered_json, printed by a
// small writer of our own because nlohmann's dump() has neither the ", " / ": " separators of
// a one-line log nor a fixed number of significant digits.
#include "launch/metrics_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace mt {

namespace {

void write_value(const nlohmann::ordered_json& v, std::string& out) {
  using Json = nlohmann::ordered_json;
  switch (v.type()) {
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, value] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += Json(key).dump(-1, ' ', false, Json::error_handler_t::replace);
        out += ": ";
        write_value(value, out);
      }
      out += '}';
      return;
    }
    case Json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i > 0) out += ", ";
        write_value(v[i], out);
      }
      out += ']';
      return;
    }
    case Json::value_t::number_float: {
      const double x = v.get<double>();
      char buf[32];
      // Integers below 2^53 are exact in a double: print all their digits, not 1.23456789e+09.
      if (std::abs(x) < 9007199254740992.0 && x == std::floor(x))
        std::snprintf(buf, sizeof buf, "%.0f", x);
      else
        std::snprintf(buf, sizeof buf, "%.9g", x);
      out += buf;
      return;
    }
    default:  // null, booleans, integers, strings
      out += v.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
}

}  // namespace

JsonObject& JsonObject::add(const std::string& key, double value) {
  if (std::isfinite(value))
    json_[key] = value;
  else
    json_[key] = nullptr;
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const std::string& value) {
  json_[key] = value;
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const JsonObject& value) {
  json_[key] = value.json_;
  return *this;
}
std::string JsonObject::str() const {
  std::string out;
  write_value(json_, out);
  return out;
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  if (path.empty()) return;
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  MT_REQUIRE(file_, "log.jsonl = ", path, ": cannot open for writing (", std::strerror(errno),
             "); choose a writable path");
}
MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}
void MetricsLog::write(const JsonObject& line) {
  if (!file_) return;
  std::fprintf(file_, "%s\n", line.str().c_str());
  std::fflush(file_);
}

}  // namespace mt
