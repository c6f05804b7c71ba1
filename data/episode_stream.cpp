// EpisodeStream: producer threads claim key indices in order and fill ring slots; consumers wait
// for their key and swap it out. One mutex guards the ring's bookkeeping; an episode is drawn
// and handed over without the lock held by anyone else touching that slot.
#include "data/episode_stream.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/check.h"

namespace mt {

// Why this cannot deadlock when capacity >= T (tasks per step): a take of key i in step s
// starts only after every key of the steps before s was taken or is being taken, and key
// i - capacity <= i - T lies in such a step. So the slot the claim counter waits on (its key is
// <= i) is emptied in finite time, every claimed key is drawn in finite time, and i gets drawn.

EpisodeStream::EpisodeStream(const EpisodeSource& source, EpisodeSpec spec, uint64_t seed,
                             std::vector<int64_t> tasks, int64_t first_step, int64_t last_step,
                             Options opt)
    : source_(source),
      spec_(std::move(spec)),
      seed_(seed),
      tasks_(std::move(tasks)),
      first_step_(first_step),
      last_step_(last_step),
      consumer_step_(first_step) {
  MT_CHECK(!tasks_.empty(), "EpisodeStream needs at least one task");
  MT_CHECK(first_step >= 0 && first_step <= last_step, "EpisodeStream steps [", first_step, ", ",
           last_step, ") are not a range of non-negative steps");
  MT_CHECK(opt.threads >= 1 && opt.depth >= 0, "EpisodeStream threads = ", opt.threads,
           ", depth = ", opt.depth, ": need threads >= 1 and depth >= 0");
  const int64_t per_step = static_cast<int64_t>(tasks_.size());
  for (int64_t p = 0; p < per_step; ++p)
    MT_CHECK(position_.emplace(tasks_[p], p).second, "EpisodeStream task ", tasks_[p],
             " is listed twice");
  source_.validate(spec_);

  // Beyond int64 key indices the stream is endless in practice: saturate.
  const int64_t steps =
      std::min(last_step - first_step, std::numeric_limits<int64_t>::max() / per_step);
  num_keys_ = steps * per_step;
  const int64_t depth = opt.depth > 0 ? opt.depth : 2 * per_step;
  slots_.resize(static_cast<size_t>(std::max(depth, per_step)));
  taken_.assign(tasks_.size(), 0);

  try {
    for (int t = 0; t < opt.threads; ++t) threads_.emplace_back([this] { produce(); });
  } catch (...) {
    stop_and_join();
    throw;
  }
}

EpisodeStream::~EpisodeStream() { stop_and_join(); }

void EpisodeStream::stop_and_join() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  ready_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

void EpisodeStream::produce() {
  const int64_t per_step = static_cast<int64_t>(tasks_.size()), cap = capacity();
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    space_.wait(lock, [&] {
      return stop_ || error_ || next_claim_ >= num_keys_ ||
             slots_[next_claim_ % cap].state == SlotState::kEmpty;
    });
    if (stop_ || error_ || next_claim_ >= num_keys_) return;
    const int64_t i = next_claim_++;
    Slot& slot = slots_[i % cap];
    slot.state = SlotState::kFilling;
    slot.key = i;
    // The next key may be claimable already (its slot was taken out of order): wake a peer.
    if (next_claim_ < num_keys_ && slots_[next_claim_ % cap].state == SlotState::kEmpty)
      space_.notify_one();
    lock.unlock();

    std::exception_ptr failure;
    try {
      source_.sample(spec_, seed_, static_cast<uint64_t>(first_step_ + i / per_step),
                     static_cast<uint64_t>(tasks_[i % per_step]), slot.ep);
    } catch (...) {
      failure = std::current_exception();
    }

    lock.lock();
    if (failure) {
      slot.state = SlotState::kEmpty;
      if (!error_) error_ = failure;
      space_.notify_all();  // the other producers stop claiming
    } else {
      slot.state = SlotState::kReady;
    }
    ready_.notify_all();
  }
}

void EpisodeStream::take(int64_t step, int64_t task, Episode<float>& out) {
  const int64_t per_step = static_cast<int64_t>(tasks_.size());
  std::unique_lock<std::mutex> lock(mutex_);
  if (taken_in_step_ == per_step && step == consumer_step_ + 1) {
    ++consumer_step_;
    taken_in_step_ = 0;
    std::fill(taken_.begin(), taken_.end(), 0);
  }
  MT_CHECK(step >= first_step_ && step < first_step_ + num_keys_ / per_step,
           "EpisodeStream::take: step ", step, " is outside the stream's steps [", first_step_,
           ", ", last_step_, ")");
  MT_CHECK(step == consumer_step_, "EpisodeStream::take: step ", step, " taken while step ",
           consumer_step_, " has ", per_step - taken_in_step_,
           " tasks left (steps are taken in order, all tasks of a step before the next)");
  const auto it = position_.find(task);
  MT_CHECK(it != position_.end(), "EpisodeStream::take: task ", task,
           " is not one of the stream's tasks");
  const int64_t pos = it->second;
  MT_CHECK(!taken_[pos], "EpisodeStream::take: task ", task, " of step ", step,
           " was already taken");
  taken_[pos] = 1;
  ++taken_in_step_;

  const int64_t i = (step - first_step_) * per_step + pos;
  Slot& slot = slots_[i % capacity()];
  ready_.wait(lock, [&] {
    if (slot.key == i && slot.state == SlotState::kReady) return true;
    // After a failure nothing new is claimed: only a key being drawn is still worth waiting for.
    const bool coming = slot.key == i && slot.state == SlotState::kFilling;
    return stop_ || (error_ && !coming);
  });
  if (slot.key == i && slot.state == SlotState::kReady) {
    std::swap(slot.ep, out);
    slot.state = SlotState::kEmpty;
    space_.notify_all();
    return;
  }
  if (error_) std::rethrow_exception(error_);
  MT_CHECK(false, "EpisodeStream::take: the stream was destroyed while taking step ", step,
           ", task ", task);
}

}  // namespace mt
