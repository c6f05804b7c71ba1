// Where a store's images live while episodes are drawn (data.resident, DESIGN §7): in the file,
// read per episode (off); decoded once at open into host memory (host); or in host memory and
// also copied once to the GPU (device). plan_residency is the rule that picks one, from the
// request, the run's device and the memory there is; query_memory supplies the memory.
#pragma once

#include <cstdint>
#include <string>

namespace mt {

enum class Residency { kAuto, kOff, kHost, kDevice };

// "auto" | "off" | "host" | "device"; anything else throws UsageError naming data.resident.
Residency parse_residency(const std::string& name);
const char* to_string(Residency r);

// The shares of memory a resident store may take: of the host's MemAvailable, and of the free
// memory of the GPU (the store's images, uint8, counted once per copy).
constexpr double kHostResidentShare = 0.50;
constexpr double kDeviceResidentShare = 0.25;

struct MemoryFacts {
  int64_t host_available = -1;  // MemAvailable of /proc/meminfo in bytes; -1 = unknown
  int64_t gpu_free = -1;        // free bytes of the current GPU; -1 = no usable GPU
  std::string no_gpu;           // why gpu_free is -1 (only asked for when needed)
};

// Reads MemAvailable and, when `gpu` is set, the free memory of the GPU current in this thread
// (creating its CUDA context).
MemoryFacts query_memory(bool gpu);

struct ResidencyPlan {
  Residency mode = Residency::kOff;
  std::string note;  // one line for the run header: the mode, its bytes, why auto chose it
};

// The mode for a store of `image_bytes` bytes of images (`store` names it in messages). `cuda`:
// the run computes on a GPU (device=cuda). A device-resident store keeps its host copy too (the
// source of the upload, and of x while the consumer still wants pixels), so kDevice needs both
// budgets. auto: kDevice when cuda and the images fit both budgets, else kHost when they fit
// the host's, else kOff. host and device are forced: a budget the images exceed, device without
// cuda or without a usable GPU, throw UsageError naming the bytes or the missing GPU. An unknown
// MemAvailable fits nothing for auto and does not stop a forced mode.
ResidencyPlan plan_residency(Residency requested, bool cuda, int64_t image_bytes,
                             const MemoryFacts& m, const std::string& store);

// "813.0 MB (812851200 bytes)" for messages.
std::string describe_bytes(int64_t bytes);

}  // namespace mt
