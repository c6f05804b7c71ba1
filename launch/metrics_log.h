// The metrics log: one JSON object per line (JSONL), appended and flushed as training goes.
// Values are numbers or nested objects; keys are written in insertion order.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace mt {

// A flat-or-nested JSON object built field by field.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const JsonObject& value);
  std::string str() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, encoded value
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
