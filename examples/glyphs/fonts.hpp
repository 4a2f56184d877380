// Font discovery and glyph rendering with FreeType: the "camera" of the glyph benchmark.
//
// A face is one (file, index) pair of a .ttf/.otf/.ttc file (a .ttc holds several faces, e.g.
// Noto Sans CJK JP/KR/SC/TC/HK of one weight). render() draws one code point anti-aliased at a
// large pixel size, crops it to its ink box and resamples it (area average) into a
// `size` x `size` grey image with the longer side of the ink box filling `size - 2 * margin`
// pixels, centred. The result is deterministic for a given font file and FreeType version.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace glyphs {

struct FaceInfo {
  std::string path;    // font file (canonical path)
  int index = 0;       // face index inside the file
  std::string family;  // FreeType family name, e.g. "Noto Sans CJK JP"
  std::string style;   // FreeType style name, e.g. "Bold"
  std::string label() const { return family + " " + style; }
};

// Font files (.ttf/.otf/.ttc/.otc) under `dirs`, walked recursively, symlinks resolved, sorted.
std::vector<std::string> list_font_files(const std::vector<std::string>& dirs);

// Every scalable face under `dirs` (walked recursively, symlinks resolved, each file once),
// in sorted path/index order.
std::vector<FaceInfo> find_faces(const std::vector<std::string>& dirs);

struct RenderParams {
  int size = 32;         // output image side
  int margin = 2;        // blank pixels kept around the ink box
  int pixel_size = 64;   // FreeType rendering size (pixels per em)
};

// One open face; not thread-safe (each thread opens its own).
class Face {
 public:
  explicit Face(const FaceInfo& info);
  ~Face();
  Face(const Face&) = delete;
  Face& operator=(const Face&) = delete;
  bool has(std::uint32_t code_point) const;
  // Code points of [first, last] that the face's Unicode charmap maps to a glyph.
  std::vector<std::uint32_t> coverage(std::uint32_t first, std::uint32_t last) const;
  // size*size bytes (0 = paper, 255 = ink), row-major. False when the glyph is missing or
  // has no ink (out is then zero).
  bool render(std::uint32_t code_point, const RenderParams& p, std::uint8_t* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The FreeType version string "major.minor.patch" (part of the cache key).
std::string freetype_version();

}  // namespace glyphs
