// The glyph renderer and the protocol's split. Needs the CJK fonts of examples/glyphs/README.md
// (IPAGothic for the known-character test).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "dataset.hpp"
#include "fonts.hpp"

namespace {

const char* const kIpaGothic = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf";

glyphs::FaceInfo ipa_gothic() {
  for (const glyphs::FaceInfo& f : glyphs::find_faces({"/usr/share/fonts/opentype/ipafont-gothic"}))
    if (f.path == std::filesystem::canonical(kIpaGothic).string()) return f;
  FAIL("IPAGothic not found: install fonts-ipafont-gothic");
  return {};
}

}  // namespace

TEST_CASE("a known character in a known face renders non-empty, centred, deterministic bytes") {
  const glyphs::FaceInfo info = ipa_gothic();
  CHECK(info.family == "IPAGothic");
  glyphs::RenderParams p;  // 32 x 32, margin 2
  std::vector<std::uint8_t> a(32 * 32), b(32 * 32);
  {
    glyphs::Face face(info);
    REQUIRE(face.has(0x6C38));  // U+6C38, "eternal"
    REQUIRE(face.render(0x6C38, p, a.data()));
  }
  {
    glyphs::Face face(info);  // a second, independent face object
    REQUIRE(face.render(0x6C38, p, b.data()));
  }
  CHECK(a == b);
  long ink = std::accumulate(a.begin(), a.end(), 0L);
  CHECK(ink > 255 * 60);  // a many-stroke character: well over 60 pixels' worth of ink
  // The ink box fills 28 pixels along its longer side, the margin stays blank.
  int top = 32, bottom = -1, left = 32, right = -1;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      if (a[static_cast<std::size_t>(y * 32 + x)] != 0) {
        top = std::min(top, y), bottom = std::max(bottom, y), left = std::min(left, x), right = std::max(right, x);
      }
  CHECK(std::max(bottom - top + 1, right - left + 1) == 28);
  CHECK(top >= 2);
  CHECK(left >= 2);
  CHECK(bottom <= 29);
  CHECK(right <= 29);
  // A different character gives different bytes; a missing code point renders nothing.
  glyphs::Face face(info);
  std::vector<std::uint8_t> c(32 * 32);
  REQUIRE(face.render(0x4E00, p, c.data()));
  CHECK(c != a);
  CHECK_FALSE(face.render(0xE000, p, c.data()));  // private use area: not in IPAGothic
  CHECK(std::all_of(c.begin(), c.end(), [](std::uint8_t v) { return v == 0; }));
}

TEST_CASE("family keys: weights and regional or spacing variants of one design share a family") {
  CHECK(glyphs::family_key("Noto Sans Mono CJK TC") == "noto sans cjk");
  CHECK(glyphs::family_key("Noto Sans CJK JP") == "noto sans cjk");
  CHECK(glyphs::family_key("Noto Serif CJK KR") == "noto serif cjk");
  CHECK(glyphs::family_key("BIZ UDPGothic") == "biz udgothic");
  CHECK(glyphs::family_key("IPAPGothic") == glyphs::family_key("IPAexGothic"));
  CHECK(glyphs::family_key("IPAMincho") != glyphs::family_key("IPAGothic"));
  CHECK(glyphs::family_key("AR PL UKai TW MBE") == "ar pl ukai");
  CHECK(glyphs::family_key("Ume P Gothic C5") == "ume gothic");
  CHECK(glyphs::family_key("MigMix 2P") == "migmix");
}

TEST_CASE("a small glyph set: characters in every style, splits disjoint in characters and families") {
  glyphs::BuildOptions o;
  o.max_chars = 90;
  o.verbose = false;
  o.cache_dir = GLYPHS_TEST_CACHE_DIR;
  const glyphs::GlyphSet g = glyphs::build_glyph_set(o);
  REQUIRE(g.num_chars() >= 60);
  REQUIRE(g.num_families() >= 3);
  CHECK(g.num_styles() >= g.num_families());
  CHECK(std::is_sorted(g.chars.begin(), g.chars.end()));
  CHECK(g.chars.front() >= 0x4E00u);
  CHECK(g.chars.back() <= 0x9FFFu);
  // Every character has ink in every style.
  for (int s = 0; s < g.num_styles(); ++s)
    for (int c = 0; c < g.num_chars(); ++c) {
      const std::uint8_t* img = g.image(s, c);
      REQUIRE(std::any_of(img, img + g.size * g.size, [](std::uint8_t v) { return v != 0; }));
    }
  // Loading it again (from the cache) gives the same bytes.
  const glyphs::GlyphSet h = glyphs::build_glyph_set(o);
  CHECK(h.from_cache);
  CHECK(h.pixels == g.pixels);
  CHECK(h.chars == g.chars);

  std::set<std::vector<int>> distinct_held_out;
  for (unsigned seed : {1u, 2u, 3u, 4u}) {
    glyphs::SplitOptions so;
    so.seed = seed;
    so.held_out_chars = 20;
    so.val_chars = 10;
    so.train_chars = 0;
    const glyphs::Split sp = glyphs::make_split(g, so);
    CHECK(sp.held_out_chars.size() == 20);
    CHECK(sp.val_chars.size() == 10);
    CHECK(sp.train_chars.size() + 30 == static_cast<std::size_t>(g.num_chars()));
    auto disjoint = [](std::vector<int> a, std::vector<int> b) {
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      std::vector<int> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      return both.empty();
    };
    CHECK(disjoint(sp.train_chars, sp.held_out_chars));
    CHECK(disjoint(sp.train_chars, sp.val_chars));
    CHECK(disjoint(sp.val_chars, sp.held_out_chars));
    CHECK(disjoint(sp.train_families, sp.held_out_families));
    CHECK(disjoint(sp.train_families, sp.val_families));
    CHECK(disjoint(sp.val_families, sp.held_out_families));
    CHECK_FALSE(sp.train_families.empty());
    CHECK_FALSE(sp.held_out_families.empty());
    CHECK_FALSE(sp.val_families.empty());
    CHECK(sp.train_styles.size() + sp.val_styles.size() + sp.held_out_styles.size() ==
          static_cast<std::size_t>(g.num_styles()));
    // Every style lies in the part of its family.
    for (int s : sp.held_out_styles)
      CHECK(std::count(sp.held_out_families.begin(), sp.held_out_families.end(), g.styles[static_cast<std::size_t>(s)].family) == 1);
    for (int s : sp.train_styles)
      CHECK(std::count(sp.train_families.begin(), sp.train_families.end(), g.styles[static_cast<std::size_t>(s)].family) == 1);
    // The same seed gives the same split.
    const glyphs::Split again = glyphs::make_split(g, so);
    CHECK(again.held_out_chars == sp.held_out_chars);
    CHECK(again.held_out_families == sp.held_out_families);
    distinct_held_out.insert(sp.held_out_chars);
  }
  CHECK(distinct_held_out.size() > 1);  // the seed changes the character split
}
