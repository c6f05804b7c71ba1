// JSONL metrics log (launch/metrics_log.h).
#include "launch/metrics_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace mt {

namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    out += c;
  }
  return out + "\"";
}
}  // namespace

JsonObject& JsonObject::add(const std::string& key, double value) {
  char buf[32];
  if (std::isfinite(value))
    std::snprintf(buf, sizeof buf, "%.9g", value);
  else
    std::snprintf(buf, sizeof buf, "null");  // JSON has no NaN / Inf
  fields_.emplace_back(key, buf);
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const std::string& value) {
  fields_.emplace_back(key, quote(value));
  return *this;
}
JsonObject& JsonObject::add(const std::string& key, const JsonObject& value) {
  fields_.emplace_back(key, value.str());
  return *this;
}
std::string JsonObject::str() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    s += (i ? ", " : "") + quote(fields_[i].first) + ": " + fields_[i].second;
  return s + "}";
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
