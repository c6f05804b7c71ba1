// Synthetic glyphs: class shapes from the class RNG stream, drawings rendered with antialiased
// distance-to-segment strokes (max-combined), per-drawing variation from the episode RNG.
#include "data/glyphs.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <vector>

#include "core/check.h"
#include "data/episode_sampler.h"

namespace mt {
namespace {

constexpr int kMaxStrokes = 4;
constexpr int kMaxPoints = 4;
constexpr float kPi = 3.14159265358979f;

struct Vec2 {
  float x = 0, y = 0;
};
Vec2 operator+(Vec2 a, Vec2 b) { return {a.x + b.x, a.y + b.y}; }
Vec2 operator-(Vec2 a, Vec2 b) { return {a.x - b.x, a.y - b.y}; }
Vec2 operator*(float s, Vec2 a) { return {s * a.x, s * a.y}; }
Vec2 lerp(Vec2 a, Vec2 b, float t) { return a + t * (b - a); }

// kLine: p0-p1; kCorner: polyline p0-p1-p2; kQuadratic / kCubic: Bezier curves.
enum class StrokeKind { kLine, kCorner, kQuadratic, kCubic };

struct Stroke {
  StrokeKind kind = StrokeKind::kLine;
  int n = 0;  // control points used
  Vec2 p[kMaxPoints];
  float width = 1;  // relative to the drawing's pen width
};

struct Glyph {
  int n = 0;
  Stroke s[kMaxStrokes];
};

Vec2 stroke_point(const Stroke& s, float t) {
  const Vec2* p = s.p;
  switch (s.kind) {
    case StrokeKind::kLine:
      return lerp(p[0], p[1], t);
    case StrokeKind::kCorner:
      return t < 0.5f ? lerp(p[0], p[1], 2 * t) : lerp(p[1], p[2], 2 * t - 1);
    case StrokeKind::kQuadratic:
      return lerp(lerp(p[0], p[1], t), lerp(p[1], p[2], t), t);
    case StrokeKind::kCubic: {
      const Vec2 a = lerp(p[0], p[1], t), b = lerp(p[1], p[2], t), c = lerp(p[2], p[3], t);
      return lerp(lerp(a, b, t), lerp(b, c, t), t);
    }
  }
  return p[0];
}

// Number of straight segments a stroke is flattened into for rendering.
int stroke_segments(StrokeKind kind) {
  switch (kind) {
    case StrokeKind::kLine:
      return 1;
    case StrokeKind::kCorner:
      return 2;
    case StrokeKind::kQuadratic:
      return 6;
    case StrokeKind::kCubic:
      return 10;
  }
  return 1;
}

float uniformf(Rng& rng, double lo, double hi) { return static_cast<float>(rng.uniform(lo, hi)); }
float random_sign(Rng& rng) { return rng.bernoulli(0.5) ? 1.0f : -1.0f; }

// The class skeleton in the unit box, scaled and centred so its extent fills [0.14, 0.86].
Glyph make_glyph(uint64_t dataset_seed, int64_t class_id) {
  Rng rng(dataset_seed, static_cast<uint64_t>(class_id), 0, Stream::kGlyph);
  Glyph g;
  const uint64_t u = rng.below(20);
  g.n = u < 2 ? 1 : u < 9 ? 2 : u < 16 ? 3 : 4;
  for (int i = 0; i < g.n; ++i) {
    Stroke& s = g.s[i];
    Vec2 a;
    if (i > 0 && rng.bernoulli(0.6)) {
      // Start on an earlier stroke (at an end or along it), as strokes of real characters do.
      const Stroke& other = g.s[rng.below(i)];
      const float t =
          rng.bernoulli(0.5) ? static_cast<float>(rng.below(2)) : uniformf(rng, 0.25, 0.75);
      a = stroke_point(other, t);
    } else {
      a = {uniformf(rng, 0.1, 0.9), uniformf(rng, 0.1, 0.9)};
    }
    const float angle = uniformf(rng, 0, 2 * kPi);
    const float len = uniformf(rng, 0.35, 0.8);
    const Vec2 dir{std::cos(angle), std::sin(angle)};
    const Vec2 normal{-dir.y, dir.x};
    const Vec2 b = a + len * dir;
    s.kind = static_cast<StrokeKind>(rng.below(4));
    s.width = uniformf(rng, 0.85, 1.15);
    switch (s.kind) {
      case StrokeKind::kLine:
        s.n = 2;
        s.p[0] = a;
        s.p[1] = b;
        break;
      case StrokeKind::kCorner:
      case StrokeKind::kQuadratic: {
        const float bend = random_sign(rng) * len * uniformf(rng, 0.3, 0.8);
        s.n = 3;
        s.p[0] = a;
        s.p[1] = lerp(a, b, uniformf(rng, 0.3, 0.7)) + bend * normal;
        s.p[2] = b;
        break;
      }
      case StrokeKind::kCubic:
        s.n = 4;
        s.p[0] = a;
        s.p[1] = lerp(a, b, 1.0f / 3) + len * uniformf(rng, -1.2, 1.2) * normal;
        s.p[2] = lerp(a, b, 2.0f / 3) + len * uniformf(rng, -1.2, 1.2) * normal;
        s.p[3] = b;
        break;
    }
  }
  Vec2 lo{1e9f, 1e9f}, hi{-1e9f, -1e9f};
  for (int i = 0; i < g.n; ++i) {
    for (int k = 0; k <= 8; ++k) {
      const Vec2 q = stroke_point(g.s[i], k / 8.0f);
      lo = {std::min(lo.x, q.x), std::min(lo.y, q.y)};
      hi = {std::max(hi.x, q.x), std::max(hi.y, q.y)};
    }
  }
  const float scale = 0.72f / std::max({hi.x - lo.x, hi.y - lo.y, 0.3f});
  const Vec2 centre = 0.5f * (lo + hi);
  for (int i = 0; i < g.n; ++i) {
    for (int k = 0; k < g.s[i].n; ++k) {
      g.s[i].p[k] = Vec2{0.5f, 0.5f} + scale * (g.s[i].p[k] - centre);
    }
  }
  return g;
}

// Max-combines a segment of radius r (pixels, soft 1-pixel edge) into the image.
void draw_segment(Vec2 a, Vec2 b, float r, float ink, float* img) {
  constexpr int n = GlyphSource::kSize;
  const float reach = r + 0.5f;
  const int x0 = std::max(0, static_cast<int>(std::floor(std::min(a.x, b.x) - reach)));
  const int x1 = std::min(n - 1, static_cast<int>(std::ceil(std::max(a.x, b.x) + reach)));
  const int y0 = std::max(0, static_cast<int>(std::floor(std::min(a.y, b.y) - reach)));
  const int y1 = std::min(n - 1, static_cast<int>(std::ceil(std::max(a.y, b.y) + reach)));
  const Vec2 ab = b - a;
  const float len2 = ab.x * ab.x + ab.y * ab.y;
  const float inv_len2 = len2 > 1e-12f ? 1.0f / len2 : 0.0f;
  for (int y = y0; y <= y1; ++y) {
    for (int x = x0; x <= x1; ++x) {
      const Vec2 ap{x + 0.5f - a.x, y + 0.5f - a.y};
      const float t = std::clamp((ap.x * ab.x + ap.y * ab.y) * inv_len2, 0.0f, 1.0f);
      const float dx = ap.x - t * ab.x, dy = ap.y - t * ab.y;
      const float d = std::sqrt(dx * dx + dy * dy);
      const float v = ink * std::clamp(reach - d, 0.0f, 1.0f);
      float& p = img[y * n + x];
      p = std::max(p, v);
    }
  }
}

}  // namespace

GlyphSource::ClassRange GlyphSource::class_range(const std::string& split) const {
  if (split == "train") return {0, kTrainClasses};
  if (split == "val") return {kTrainClasses, kEvalClasses};
  if (split == "test") return {kTrainClasses + kEvalClasses, kEvalClasses};
  throw UsageError(detail::concat("unknown split '", split,
                                  "' for the glyphs dataset: use train, val or test ",
                                  "(data.train_split / data.eval_split)"));
}

int64_t GlyphSource::num_classes(const std::string& split) const {
  return class_range(split).count;
}

int GlyphSource::min_examples_per_class(const std::string& split) const {
  class_range(split);
  return kExamplesPerClass;
}

void GlyphSource::validate(const EpisodeSpec& spec) const {
  check_episode_spec(spec, name(), num_classes(spec.split), kExamplesPerClass);
}

void GlyphSource::render(int64_t class_id, Rng& rng, float* out) const {
  const Glyph g = make_glyph(dataset_seed_, class_id);

  // Affine map of the unit box about its centre, then to pixel coordinates.
  const float angle = uniformf(rng, -10, 10) * kPi / 180;
  const float scale = uniformf(rng, 0.9, 1.1);
  const float aspect = uniformf(rng, 0.93, 1.07);
  const float shear = uniformf(rng, -0.15, 0.15);
  const float sx = kSize * scale * aspect, sy = kSize * scale / aspect;
  const float c = std::cos(angle), s = std::sin(angle);
  // [[c, -s], [s, c]] * [[sx, shear * sx], [0, sy]]
  const float m00 = c * sx, m01 = c * shear * sx - s * sy;
  const float m10 = s * sx, m11 = s * shear * sx + c * sy;
  const Vec2 offset{0.5f * kSize + uniformf(rng, -2, 2), 0.5f * kSize + uniformf(rng, -2, 2)};
  const float jitter = 0.045f;
  const float pen = uniformf(rng, 0.8, 1.4);
  const float ink = uniformf(rng, 0.9, 1.0);

  std::fill_n(out, kSize * kSize, 0.0f);
  for (int i = 0; i < g.n; ++i) {
    Stroke st = g.s[i];
    for (int k = 0; k < st.n; ++k) {
      const Vec2 q = st.p[k] +
                     Vec2{jitter * static_cast<float>(rng.normal()),
                          jitter * static_cast<float>(rng.normal())} -
                     Vec2{0.5f, 0.5f};
      st.p[k] = offset + Vec2{m00 * q.x + m01 * q.y, m10 * q.x + m11 * q.y};
    }
    const float r = pen * st.width * uniformf(rng, 0.9, 1.1);
    const int segments = stroke_segments(st.kind);
    Vec2 prev = st.p[0];
    for (int k = 1; k <= segments; ++k) {
      const Vec2 next = stroke_point(st, static_cast<float>(k) / segments);
      draw_segment(prev, next, r, ink, out);
      prev = next;
    }
  }
  // Uneven ink: each inked pixel loses up to 10% of its intensity.
  uint32_t bits = 0;
  int bytes_left = 0;
  for (int p = 0; p < kSize * kSize; ++p) {
    if (out[p] == 0.0f) continue;
    if (bytes_left == 0) {
      bits = rng.next_u32();
      bytes_left = 4;
    }
    out[p] *= 1.0f - 0.1f * static_cast<float>(bits & 0xff) / 255.0f;
    bits >>= 8;
    --bytes_left;
  }
}

void GlyphSource::sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
                         Episode<float>& ep) const {
  validate(spec);
  const ClassRange range = class_range(spec.split);
  Rng rng(seed, step, task, Stream::kEpisode);
  std::vector<int64_t> classes;
  sample_distinct(rng, range.count, spec.ways, classes);
  shape_episode(spec, image_shape(), ep);
  const int64_t pixels = kSize * kSize;
  for (int i = 0; i < ep.support.n; ++i) {
    render(range.first + classes[ep.support.y[i]], rng, ep.support.x.data() + i * pixels);
  }
  for (int i = 0; i < ep.query.n; ++i) {
    render(range.first + classes[ep.query.y[i]], rng, ep.query.x.data() + i * pixels);
  }
}

void write_pgm_grid(const std::string& path, const Batch<float>& b, int cols) {
  MT_CHECK(cols >= 1 && b.n >= 0, "write_pgm_grid: cols = ", cols, ", n = ", b.n);
  const int c = b.item.c, h = b.item.h, w = b.item.w;
  const int rows = std::max(1, (b.n + cols - 1) / cols);
  const int width = cols * (w + 1) + 1, height = rows * (h + 1) + 1;
  std::vector<unsigned char> pix(static_cast<size_t>(width) * height, 128);
  for (int i = 0; i < b.n; ++i) {
    const float* img = b.x.data() + static_cast<size_t>(i) * b.item.size();
    const int top = 1 + (i / cols) * (h + 1), left = 1 + (i % cols) * (w + 1);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        float v = 0;
        for (int ch = 0; ch < c; ++ch) v += img[(ch * h + y) * w + x];
        v = std::clamp(v / std::max(c, 1), 0.0f, 1.0f);
        pix[static_cast<size_t>(top + y) * width + left + x] =
            static_cast<unsigned char>(std::lround(255 * v));
      }
    }
  }
  std::ofstream f(path, std::ios::binary);
  MT_REQUIRE(f.good(), "cannot write image grid '", path, "': check that its folder exists and ",
             "is writable");
  f << "P5\n" << width << " " << height << "\n255\n";
  f.write(reinterpret_cast<const char*>(pix.data()), static_cast<std::streamsize>(pix.size()));
  MT_REQUIRE(f.good(), "failed writing image grid '", path, "' (disk full?)");
}

}  // namespace mt
