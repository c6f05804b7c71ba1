// pack_rows (data/resident_images.h): the batched layout's rows as store image indices, on the
// host, for the device gather.
#include "data/resident_images.h"

#include "core/check.h"

namespace mt {

void pack_rows(const std::vector<const Episode<float>*>& eps, Split s, int64_t* index_of_row,
               int32_t* y) {
  const int T = static_cast<int>(eps.size());
  MT_CHECK(T > 0, "pack_rows of no tasks");
  const Batch<float>& first = s == Split::kSupport ? eps[0]->support : eps[0]->query;
  for (int t = 0; t < T; ++t) {
    const Batch<float>& b = s == Split::kSupport ? eps[t]->support : eps[t]->query;
    MT_CHECK(b.n == first.n && b.item == first.item,
             "the tasks of a batch differ in examples or image shape");
    MT_CHECK(static_cast<int64_t>(b.source.size()) == b.n, "task ", t, " carries ", b.source.size(),
             " image indices for ", b.n, " examples: draw it from an EpisodeStore");
    for (int i = 0; i < b.n; ++i) {
      index_of_row[static_cast<int64_t>(i) * T + t] = b.source[i];
      y[static_cast<int64_t>(i) * T + t] = b.y[i];
    }
  }
}

}  // namespace mt
