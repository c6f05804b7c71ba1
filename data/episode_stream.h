// Prefetch (DESIGN §7): background threads draw the episodes of steps first_step, first_step+1, …
// from an EpisodeSource into a bounded ring, ahead of the training loop that takes them. The
// episodes are bit-identical to calling source.sample directly, whatever the threads and depth.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/episode.h"
#include "data/episode_source.h"

namespace mt {

// Keys are (step, task) for step in [first_step, last_step) and task in `tasks` order; key index
// i = (step - first_step) * tasks.size() + position of task. Key i lives in ring slot
// i % capacity. Producers claim key indices in increasing order from a shared counter, and claim
// key i only once its slot is empty, i.e. once key i - capacity has been taken.
class EpisodeStream {
 public:
  struct Options {
    int threads = 2;  // producer threads, >= 1
    int depth = 0;    // ring slots; 0 = two steps' worth of tasks; rounded up to tasks.size()
  };

  // Validates spec against the source (UsageError naming the key, as EpisodeSource::validate)
  // and starts the producers. `source` must outlive the stream. Tasks must be distinct and
  // non-empty; first_step <= last_step.
  EpisodeStream(const EpisodeSource& source, EpisodeSpec spec, uint64_t seed,
                std::vector<int64_t> tasks, int64_t first_step, int64_t last_step, Options opt);
  // Stops the producers and joins them: returns once any episode being drawn is finished, never
  // throws. No take() may be running.
  ~EpisodeStream();

  EpisodeStream(const EpisodeStream&) = delete;
  EpisodeStream& operator=(const EpisodeStream&) = delete;

  // Blocks until episode (step, task) is ready, then swaps it into `out`: `out` is overwritten
  // and its previous buffers go back to the ring to be refilled. May be called concurrently
  // from several threads for different tasks of the same step. Steps must be taken in order,
  // each task once per step, every task of a step before any task of the next; a key out of
  // that order, or unknown, throws Error (MT_CHECK) at once. An exception thrown by the source
  // while drawing this key (or, after it, any key not yet drawn) is rethrown here.
  void take(int64_t step, int64_t task, Episode<float>& out);

  int64_t capacity() const { return static_cast<int64_t>(slots_.size()); }

 private:
  enum class SlotState { kEmpty, kFilling, kReady };
  struct Slot {
    SlotState state = SlotState::kEmpty;
    int64_t key = -1;  // the key index the slot holds or is being filled with
    Episode<float> ep;
  };

  void produce();
  void stop_and_join() noexcept;

  const EpisodeSource& source_;
  const EpisodeSpec spec_;
  const uint64_t seed_;
  const std::vector<int64_t> tasks_;
  std::unordered_map<int64_t, int64_t> position_;  // task id -> position in tasks_
  const int64_t first_step_, last_step_;
  int64_t num_keys_ = 0;  // (last_step - first_step) * tasks.size(), saturated

  std::mutex mutex_;
  std::condition_variable space_;  // producers wait for the slot of next_claim_ to empty
  std::condition_variable ready_;  // consumers wait for their key
  std::vector<Slot> slots_;        // slot contents are touched without the lock only by the
                                   // producer that holds the slot in state kFilling
  int64_t next_claim_ = 0;         // the next key index a producer will claim
  int64_t consumer_step_;          // the step takes are currently allowed for
  int64_t taken_in_step_ = 0;      // takes started for consumer_step_
  std::vector<char> taken_;        // per task position: taken in consumer_step_
  std::exception_ptr error_;       // the first producer exception; stops all claiming
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mt
