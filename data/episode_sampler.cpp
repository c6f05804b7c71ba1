// Spec checking, distinct-index draws and episode layout shared by all episode sources.
#include "data/episode_sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "core/check.h"

namespace mt {

void check_episode_spec(const EpisodeSpec& spec, const std::string& source, int64_t num_classes,
                        int64_t examples_per_class) {
  const std::string where = "split '" + spec.split + "' of " + source;
  MT_REQUIRE(spec.ways >= 2, "task.ways = ", spec.ways, " is too small: an episode needs at ",
             "least 2 classes; set task.ways >= 2");
  MT_REQUIRE(spec.ways <= num_classes, "task.ways = ", spec.ways, " exceeds the ", num_classes,
             " classes of ", where, "; set task.ways <= ", num_classes);
  MT_REQUIRE(spec.shots >= 1, "task.shots = ", spec.shots, " must be at least 1");
  MT_REQUIRE(spec.queries >= 1, "task.queries = ", spec.queries, " must be at least 1");
  const int64_t per_class = static_cast<int64_t>(spec.shots) + spec.queries;
  MT_REQUIRE(per_class <= examples_per_class, "task.shots + task.queries = ", per_class,
             " exceeds the ", examples_per_class, " examples of the smallest class in ", where,
             "; lower task.shots or task.queries");
}

void sample_distinct(Rng& rng, int64_t n, int k, std::vector<int64_t>& out) {
  MT_CHECK(k >= 0 && k <= n, "cannot draw ", k, " distinct values from ", n);
  out.resize(k);
  if (n <= 8 * static_cast<int64_t>(k)) {
    // Dense case: partial Fisher-Yates over all n values.
    std::vector<int64_t> all(n);
    std::iota(all.begin(), all.end(), int64_t{0});
    for (int i = 0; i < k; ++i) {
      const int64_t j = i + static_cast<int64_t>(rng.below(n - i));
      std::swap(all[i], all[j]);
      out[i] = all[i];
    }
    return;
  }
  // Sparse case: rejection, with the values drawn so far kept sorted for the duplicate test.
  std::vector<int64_t> seen;
  seen.reserve(k);
  for (int i = 0; i < k;) {
    const int64_t v = static_cast<int64_t>(rng.below(n));
    const auto it = std::lower_bound(seen.begin(), seen.end(), v);
    if (it != seen.end() && *it == v) continue;
    seen.insert(it, v);
    out[i++] = v;
  }
}

void shape_episode(const EpisodeSpec& spec, Shape image, Episode<float>& ep, bool pixels) {
  ep.ways = spec.ways;
  for (auto [b, n] : {std::pair{&ep.support, spec.ways * spec.shots},
                      std::pair{&ep.query, spec.ways * spec.queries}}) {
    b->resize(image, pixels ? n : 0);
    b->n = n;
    b->y.resize(n);
  }
  for (int c = 0; c < spec.ways; ++c) {
    std::fill_n(ep.support.y.begin() + c * spec.shots, spec.shots, c);
    std::fill_n(ep.query.y.begin() + c * spec.queries, spec.queries, c);
  }
}

}  // namespace mt
