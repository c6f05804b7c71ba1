// The residency rule of data.resident (data/residency.h) and the memory facts it reads.
#include "data/residency.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "data/resident_images.h"

namespace mt {

using detail::concat;

Residency parse_residency(const std::string& name) {
  if (name == "auto") return Residency::kAuto;
  if (name == "off") return Residency::kOff;
  if (name == "host") return Residency::kHost;
  if (name == "device") return Residency::kDevice;
  throw UsageError(concat("data.resident = ", name, ": must be one of auto, host, device, off"));
}

const char* to_string(Residency r) {
  switch (r) {
    case Residency::kAuto:
      return "auto";
    case Residency::kOff:
      return "off";
    case Residency::kHost:
      return "host";
    case Residency::kDevice:
      return "device";
  }
  return "?";
}

namespace {

// "813.0 MB", "24.1 GB".
std::string short_bytes(int64_t bytes) {
  const bool gb = bytes >= int64_t{1} << 30;
  char human[32];
  std::snprintf(human, sizeof human, "%.1f %s", bytes / (gb ? 1e9 : 1e6), gb ? "GB" : "MB");
  return human;
}

}  // namespace

std::string describe_bytes(int64_t bytes) {
  return concat(short_bytes(bytes), " (", bytes, " bytes)");
}

MemoryFacts query_memory(bool gpu) {
  MemoryFacts m;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    std::istringstream fields(line);
    std::string key, unit;
    long long value = 0;
    if (fields >> key >> value >> unit && key == "MemAvailable:" && unit == "kB") {
      m.host_available = static_cast<int64_t>(value) * 1024;
      break;
    }
  }
  if (gpu) m.gpu_free = current_gpu_free_bytes(&m.no_gpu);
  return m;
}

namespace {

// Whether bytes fit share · budget (an unknown budget, -1, fits nothing).
bool fits(int64_t bytes, double share, int64_t budget) {
  return budget >= 0 && static_cast<double>(bytes) <= share * static_cast<double>(budget);
}

std::string percent(double share) { return concat(static_cast<int>(share * 100 + 0.5), "%"); }

std::string host_budget(const MemoryFacts& m) {
  return m.host_available < 0
             ? std::string("an unknown amount of host memory (no MemAvailable in /proc/meminfo)")
             : concat(percent(kHostResidentShare), " of the host's available memory, ",
                      describe_bytes(m.host_available));
}

std::string gpu_budget(const MemoryFacts& m) {
  return concat(percent(kDeviceResidentShare), " of the GPU's free memory, ",
                describe_bytes(m.gpu_free));
}

}  // namespace

ResidencyPlan plan_residency(Residency requested, bool cuda, int64_t image_bytes,
                             const MemoryFacts& m, const std::string& store) {
  const bool host_fits = fits(image_bytes, kHostResidentShare, m.host_available);
  const bool gpu_fits = fits(image_bytes, kDeviceResidentShare, m.gpu_free);
  const std::string size = describe_bytes(image_bytes), brief = short_bytes(image_bytes);
  switch (requested) {
    case Residency::kOff:
      return {Residency::kOff, "off"};
    case Residency::kHost:
      MT_REQUIRE(host_fits || m.host_available < 0, "data.resident = host: the images of ", store,
                 " take ", size, ", more than ", host_budget(m),
                 "; set data.resident = off (or auto) to read them from the file per episode");
      return {Residency::kHost, concat("host, ", brief)};
    case Residency::kDevice:
      MT_REQUIRE(cuda, "data.resident = device needs device = cuda (this run computes on the ",
                 "CPU); set data.resident = host, auto or off");
      MT_REQUIRE(m.gpu_free >= 0, "data.resident = device, but no GPU is usable (", m.no_gpu,
                 "); set data.resident = host, auto or off");
      MT_REQUIRE(gpu_fits, "data.resident = device: the images of ", store, " take ", size,
                 ", more than ", gpu_budget(m), "; set data.resident = host or auto");
      MT_REQUIRE(host_fits || m.host_available < 0, "data.resident = device: the images of ", store,
                 " take ", size, ", more than ", host_budget(m),
                 " (a device-resident store keeps a host copy); set data.resident = off or auto");
      return {Residency::kDevice, concat("device, ", brief)};
    case Residency::kAuto:
      break;
  }
  if (cuda && gpu_fits && host_fits) return {Residency::kDevice, concat("device (auto), ", brief)};
  if (host_fits) {
    const std::string why = !cuda            ? ""
                            : m.gpu_free < 0 ? "; no usable GPU"
                                             : concat("; more than ", gpu_budget(m));
    return {Residency::kHost, concat("host (auto), ", brief, why)};
  }
  return {Residency::kOff,
          concat("off (auto): the images take ", size, ", more than ", host_budget(m))};
}

}  // namespace mt
