#include "fonts.hpp"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <stdexcept>

namespace glyphs {
namespace {

struct Library {
  FT_Library lib = nullptr;
  Library() {
    if (FT_Init_FreeType(&lib) != 0) throw std::runtime_error("FreeType: FT_Init_FreeType failed");
  }
  ~Library() { FT_Done_FreeType(lib); }
  Library(const Library&) = delete;
  Library& operator=(const Library&) = delete;
};

bool is_font_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".ttf" || ext == ".otf" || ext == ".ttc" || ext == ".otc";
}

// Area-average resampling weights of n source pixels onto m destination pixels: destination i
// covers the source interval [i n / m, (i + 1) n / m); weights sum to 1 per destination pixel.
struct Tap {
  int src;
  float w;
};
std::vector<std::vector<Tap>> area_weights(int n, int m) {
  std::vector<std::vector<Tap>> taps(static_cast<std::size_t>(m));
  const double scale = static_cast<double>(n) / m;
  for (int i = 0; i < m; ++i) {
    const double a = i * scale, b = (i + 1) * scale;
    for (int s = static_cast<int>(std::floor(a)); s < static_cast<int>(std::ceil(b)) && s < n; ++s) {
      const double overlap = std::min<double>(b, s + 1) - std::max<double>(a, s);
      if (overlap > 0) taps[static_cast<std::size_t>(i)].push_back({s, static_cast<float>(overlap / scale)});
    }
  }
  return taps;
}

}  // namespace

std::vector<std::string> list_font_files(const std::vector<std::string>& dirs) {
  namespace fs = std::filesystem;
  std::set<std::string> files;
  for (const std::string& d : dirs) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    for (fs::recursive_directory_iterator it(d, fs::directory_options::follow_directory_symlink, ec), end;
         !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file(ec) || !is_font_file(it->path())) continue;
      const fs::path canonical = fs::canonical(it->path(), ec);
      if (!ec) files.insert(canonical.string());
    }
  }
  return {files.begin(), files.end()};
}

std::vector<FaceInfo> find_faces(const std::vector<std::string>& dirs) {
  const std::vector<std::string> files = list_font_files(dirs);
  Library lib;
  std::vector<FaceInfo> faces;
  for (const std::string& f : files) {
    FT_Face probe = nullptr;
    if (FT_New_Face(lib.lib, f.c_str(), -1, &probe) != 0) continue;
    const long n = probe->num_faces;
    FT_Done_Face(probe);
    for (long k = 0; k < n; ++k) {
      FT_Face face = nullptr;
      if (FT_New_Face(lib.lib, f.c_str(), k, &face) != 0) continue;
      if ((face->face_flags & FT_FACE_FLAG_SCALABLE) != 0 && FT_Select_Charmap(face, FT_ENCODING_UNICODE) == 0)
        faces.push_back({f, static_cast<int>(k), face->family_name ? face->family_name : "",
                         face->style_name ? face->style_name : ""});
      FT_Done_Face(face);
    }
  }
  return faces;
}

struct Face::Impl {
  Library lib;
  FT_Face face = nullptr;
  int pixel_size = 0;
  std::vector<float> ink, tmp;  // resampling buffers
  ~Impl() {
    if (face) FT_Done_Face(face);
  }
};

Face::Face(const FaceInfo& info) : impl_(std::make_unique<Impl>()) {
  if (FT_New_Face(impl_->lib.lib, info.path.c_str(), info.index, &impl_->face) != 0)
    throw std::runtime_error("FreeType cannot open " + info.path + " face " + std::to_string(info.index));
  if (FT_Select_Charmap(impl_->face, FT_ENCODING_UNICODE) != 0)
    throw std::runtime_error(info.path + ": no Unicode charmap");
}

Face::~Face() = default;

bool Face::has(std::uint32_t code_point) const { return FT_Get_Char_Index(impl_->face, code_point) != 0; }

std::vector<std::uint32_t> Face::coverage(std::uint32_t first, std::uint32_t last) const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t c = first; c <= last; ++c)
    if (has(c)) out.push_back(c);
  return out;
}

bool Face::render(std::uint32_t code_point, const RenderParams& p, std::uint8_t* out) {
  std::fill(out, out + p.size * p.size, std::uint8_t{0});
  FT_Face face = impl_->face;
  const FT_UInt glyph = FT_Get_Char_Index(face, code_point);
  if (glyph == 0) return false;
  if (impl_->pixel_size != p.pixel_size) {
    if (FT_Set_Pixel_Sizes(face, 0, static_cast<FT_UInt>(p.pixel_size)) != 0) return false;
    impl_->pixel_size = p.pixel_size;
  }
  // Outlines only (no embedded bitmaps), unhinted: the design's shape, the same at any size.
  if (FT_Load_Glyph(face, glyph, FT_LOAD_NO_BITMAP | FT_LOAD_NO_HINTING) != 0) return false;
  if (FT_Render_Glyph(face->glyph, FT_RENDER_MODE_NORMAL) != 0) return false;
  const FT_Bitmap& bm = face->glyph->bitmap;
  if (bm.pixel_mode != FT_PIXEL_MODE_GRAY || bm.pitch <= 0 || bm.rows == 0 || bm.width == 0) return false;
  const int rows = static_cast<int>(bm.rows), cols = static_cast<int>(bm.width);
  const float max_value = static_cast<float>(bm.num_grays > 1 ? bm.num_grays - 1 : 255);
  // Ink box.
  int top = rows, bottom = -1, left = cols, right = -1;
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x)
      if (bm.buffer[y * bm.pitch + x] != 0) {
        top = std::min(top, y);
        bottom = std::max(bottom, y);
        left = std::min(left, x);
        right = std::max(right, x);
      }
  if (bottom < 0) return false;
  const int h = bottom - top + 1, w = right - left + 1, box = p.size - 2 * p.margin;
  const double f = static_cast<double>(box) / std::max(w, h);
  const int dw = std::clamp(static_cast<int>(std::lround(w * f)), 1, box);
  const int dh = std::clamp(static_cast<int>(std::lround(h * f)), 1, box);
  const auto wx = area_weights(w, dw), wy = area_weights(h, dh);
  // Columns first (h x dw), then rows (dh x dw).
  std::vector<float>& tmp = impl_->tmp;
  tmp.assign(static_cast<std::size_t>(h * dw), 0.f);
  for (int y = 0; y < h; ++y) {
    const unsigned char* row = bm.buffer + (top + y) * bm.pitch + left;
    for (int x = 0; x < dw; ++x) {
      float acc = 0.f;
      for (const Tap& t : wx[static_cast<std::size_t>(x)]) acc += t.w * static_cast<float>(row[t.src]);
      tmp[static_cast<std::size_t>(y * dw + x)] = acc;
    }
  }
  const int ox = (p.size - dw) / 2, oy = (p.size - dh) / 2;
  bool any = false;
  for (int y = 0; y < dh; ++y)
    for (int x = 0; x < dw; ++x) {
      float acc = 0.f;
      for (const Tap& t : wy[static_cast<std::size_t>(y)]) acc += t.w * tmp[static_cast<std::size_t>(t.src * dw + x)];
      const long v = std::lround(255.f * acc / max_value);
      const auto byte = static_cast<std::uint8_t>(std::clamp<long>(v, 0, 255));
      out[(oy + y) * p.size + ox + x] = byte;
      any = any || byte != 0;
    }
  return any;
}

std::string freetype_version() {
  Library lib;
  FT_Int major = 0, minor = 0, patch = 0;
  FT_Library_Version(lib.lib, &major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace glyphs
