// The metrics log: one JSON object per line (JSONL), appended and flushed as training goes.
// Values are numbers, strings or nested objects, kept in an nlohmann::ordered_json so keys are
// written in insertion order; the line's text is formatted as described at JsonObject::str.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace mt {

// A flat-or-nested JSON object built field by field. Adding a key again replaces its value.
class JsonObject {
 public:
  // Non-finite numbers are stored as null (JSON has no NaN / Inf).
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const JsonObject& value);
  // One line of text: {"key": value, "key": value}. Numbers print as by "%.9g" (nine
  // significant digits, so logs stay short) except integers below 2^53, which print exactly;
  // strings are escaped by nlohmann-json (invalid UTF-8 replaced by U+FFFD).
  std::string str() const;

 private:
  nlohmann::ordered_json json_ = nlohmann::ordered_json::object();
};

class MetricsLog {
 public:
  // Opens (creating directories) or, when path is empty, disables the log.
  explicit MetricsLog(const std::string& path, bool append);
  ~MetricsLog();
  void write(const JsonObject& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace mt
