// The glyph data set: CJK Unified Ideographs (U+4E00-U+9FFF) rendered in every installed CJK
// face. A class is a character; its "photos" are its renderings in the distinct styles.
//
//  1. faces: every scalable face under the font directories that maps at least
//     `min_coverage` ideographs;
//  2. characters: the ideographs every such face maps and renders with ink;
//  3. styles: faces whose renderings are (near-)identical (mean absolute pixel difference
//     below `style_merge` on a fixed sample of characters, e.g. the JP/KR/SC/TC/HK variants
//     of one Noto weight, or the MigMix and IPA kanji) are one style, rendered once;
//  4. families: styles of one design (the same family name once regional, "Mono"/"P" and
//     variant tokens are dropped: all weights of Noto Sans CJK) or closer than
//     `family_merge` (a derived design: IPAex from IPA) form one family, so that no near-copy
//     of a held-out style is seen in training.
//
// The rendered set is cached in a binary file keyed by the fonts (path, size, time), the
// parameters and the FreeType version; a second run loads it at once.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fonts.hpp"

namespace glyphs {

struct BuildOptions {
  std::vector<std::string> font_dirs{"/usr/share/fonts"};
  RenderParams render;
  int min_coverage = 4000;     // ideographs a face must map to take part
  double max_blank = 0.05;     // faces drawing nothing for more of the common characters are dropped
  int max_chars = 0;           // > 0: keep only this many characters (tests, smoke runs)
  int max_faces = 0;           // > 0: keep only the first faces (tests)
  double style_merge = 0.012;  // mean |difference| / 255 below which two faces are one style
  double family_merge = 0.045; // ... below which two styles are one family
  int sample_chars = 200;      // characters used for the distances
  int threads = 2;
  std::string cache_dir;       // empty: no cache
  bool verbose = true;
};

struct Style {
  std::string name;                // the first face's "family style"
  int family = 0;                  // index into GlyphSet::families
  std::vector<std::string> faces;  // every face merged into it
};

struct GlyphSet {
  int size = 32;
  std::vector<std::uint32_t> chars;   // code points, ascending
  std::vector<Style> styles;
  std::vector<std::string> families;  // a name per family
  std::vector<std::uint8_t> pixels;   // styles x chars x size^2, 0 paper .. 255 ink
  int faces_found = 0;                // faces with enough coverage before merging
  bool from_cache = false;

  int num_chars() const { return static_cast<int>(chars.size()); }
  int num_styles() const { return static_cast<int>(styles.size()); }
  int num_families() const { return static_cast<int>(families.size()); }
  const std::uint8_t* image(int style, int ch) const {
    return pixels.data() + (static_cast<std::size_t>(style) * chars.size() + static_cast<std::size_t>(ch)) *
                               static_cast<std::size_t>(size * size);
  }
};

// Finds, renders, merges (or loads the cache). Throws std::runtime_error when no face qualifies.
GlyphSet build_glyph_set(const BuildOptions& o);

// The family key of a face's family name (lower case, regional/"Mono"/"P"/variant tokens
// dropped): "Noto Sans Mono CJK TC" -> "noto sans cjk", "BIZ UDPGothic" -> "biz udgothic".
std::string family_key(const std::string& family_name);

// The protocol's split: characters into training / validation / held-out classes, families
// into training / validation / held-out families, all from one seed. Validation characters and
// families are for choosing hyper-parameters; held-out ones for the reported figures only.
struct SplitOptions {
  int held_out_chars = 1000;
  int val_chars = 300;
  int train_chars = 2000;              // at most; 0: every remaining character
  double held_out_style_share = 0.25;  // families join while the part stays within this share of styles
  double val_style_share = 0.12;
  unsigned seed = 1;
};
struct Split {
  std::vector<int> train_chars, val_chars, held_out_chars;           // indices into chars
  std::vector<int> train_styles, val_styles, held_out_styles;        // indices into styles
  std::vector<int> train_families, val_families, held_out_families;  // indices into families
};
Split make_split(const GlyphSet& g, const SplitOptions& o);

}  // namespace glyphs
