#include "dataset.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace glyphs {
namespace {

constexpr std::uint32_t kFirst = 0x4E00, kLast = 0x9FFF;
constexpr char kMagic[8] = {'M', 'L', 'G', 'L', 'Y', 'P', 'H', '1'};

// Runs f(k) for k in [0, n) on `threads` threads (work stealing by an atomic counter).
template <typename F>
void parallel_for(int n, int threads, F f) {
  std::atomic<int> next{0};
  auto worker = [&]() {
    for (int k; (k = next++) < n;) f(k);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(1, threads); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

struct UnionFind {
  std::vector<int> parent;
  explicit UnionFind(int n) : parent(static_cast<std::size_t>(n)) { std::iota(parent.begin(), parent.end(), 0); }
  int find(int a) {
    while (parent[static_cast<std::size_t>(a)] != a) a = parent[static_cast<std::size_t>(a)] = parent[static_cast<std::size_t>(parent[static_cast<std::size_t>(a)])];
    return a;
  }
  void unite(int a, int b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[static_cast<std::size_t>(std::max(a, b))] = std::min(a, b);  // the first face is the root
  }
};

std::uint64_t fnv1a(const std::string& s, std::uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Every option and every font file (path, size, modification time): a font installed,
// removed or upgraded changes the key.
std::string cache_key(const BuildOptions& o, const std::vector<std::string>& files) {
  std::ostringstream k;
  k << "glyphs-v2 size " << o.render.size << " margin " << o.render.margin << " px " << o.render.pixel_size
    << " cov " << o.min_coverage << " blank " << o.max_blank << " chars " << o.max_chars << " faces " << o.max_faces << " merge "
    << o.style_merge << ' ' << o.family_merge << " sample " << o.sample_chars << " ft " << freetype_version() << '\n';
  for (const std::string& f : files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    const auto time = std::filesystem::last_write_time(f, ec).time_since_epoch().count();
    k << f << ' ' << size << ' ' << time << '\n';
  }
  return k.str();
}

void write_string(std::ostream& out, const std::string& s) {
  const std::uint32_t n = static_cast<std::uint32_t>(s.size());
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  out.write(s.data(), n);
}
std::string read_string(std::istream& in) {
  std::uint32_t n = 0;
  in.read(reinterpret_cast<char*>(&n), sizeof n);
  if (!in || n > (1u << 20)) throw std::runtime_error("corrupt glyph cache");
  std::string s(n, '\0');
  in.read(s.data(), n);
  return s;
}
template <typename T>
void write_pod(std::ostream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof v);
}
template <typename T>
T read_pod(std::istream& in) {
  T v{};
  in.read(reinterpret_cast<char*>(&v), sizeof v);
  if (!in) throw std::runtime_error("corrupt glyph cache");
  return v;
}

void save(const std::string& path, const std::string& key, const GlyphSet& g) {
  // A unique temporary name, then an atomic rename: concurrent runs never see half a file.
  const std::string tmp = path + ".tmp" + std::to_string(std::random_device{}());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) return;
    out.write(kMagic, sizeof kMagic);
    write_string(out, key);
    write_pod<std::int32_t>(out, g.size);
    write_pod<std::int32_t>(out, g.faces_found);
    write_pod<std::uint32_t>(out, static_cast<std::uint32_t>(g.chars.size()));
    out.write(reinterpret_cast<const char*>(g.chars.data()), static_cast<std::streamsize>(g.chars.size() * 4));
    write_pod<std::uint32_t>(out, static_cast<std::uint32_t>(g.families.size()));
    for (const auto& f : g.families) write_string(out, f);
    write_pod<std::uint32_t>(out, static_cast<std::uint32_t>(g.styles.size()));
    for (const Style& s : g.styles) {
      write_string(out, s.name);
      write_pod<std::int32_t>(out, s.family);
      write_pod<std::uint32_t>(out, static_cast<std::uint32_t>(s.faces.size()));
      for (const auto& f : s.faces) write_string(out, f);
    }
    out.write(reinterpret_cast<const char*>(g.pixels.data()), static_cast<std::streamsize>(g.pixels.size()));
    if (!out) return;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
}

bool load(const std::string& path, const std::string& key, GlyphSet& g) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  char magic[sizeof kMagic];
  in.read(magic, sizeof magic);
  if (!in || !std::equal(magic, magic + sizeof magic, kMagic)) return false;
  try {
    if (read_string(in) != key) return false;
    g.size = read_pod<std::int32_t>(in);
    g.faces_found = read_pod<std::int32_t>(in);
    g.chars.resize(read_pod<std::uint32_t>(in));
    in.read(reinterpret_cast<char*>(g.chars.data()), static_cast<std::streamsize>(g.chars.size() * 4));
    g.families.resize(read_pod<std::uint32_t>(in));
    for (auto& f : g.families) f = read_string(in);
    g.styles.resize(read_pod<std::uint32_t>(in));
    for (Style& s : g.styles) {
      s.name = read_string(in);
      s.family = read_pod<std::int32_t>(in);
      s.faces.resize(read_pod<std::uint32_t>(in));
      for (auto& f : s.faces) f = read_string(in);
    }
    g.pixels.resize(g.styles.size() * g.chars.size() * static_cast<std::size_t>(g.size * g.size));
    in.read(reinterpret_cast<char*>(g.pixels.data()), static_cast<std::streamsize>(g.pixels.size()));
    if (!in) return false;
  } catch (const std::runtime_error&) {
    return false;
  }
  g.from_cache = true;
  return true;
}

// Mean |a - b| / 255 over the characters both faces rendered.
double distance(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, const std::vector<char>& ok_a,
                const std::vector<char>& ok_b, int pixels) {
  long sum = 0, n = 0;
  for (std::size_t c = 0; c < ok_a.size(); ++c) {
    if (!ok_a[c] || !ok_b[c]) continue;
    const std::uint8_t* p = a.data() + c * static_cast<std::size_t>(pixels);
    const std::uint8_t* q = b.data() + c * static_cast<std::size_t>(pixels);
    for (int k = 0; k < pixels; ++k) sum += std::abs(int(p[k]) - int(q[k]));
    n += pixels;
  }
  return n ? static_cast<double>(sum) / (255.0 * static_cast<double>(n)) : 1.0;
}

}  // namespace

std::string family_key(const std::string& family_name) {
  std::string s;
  for (char c : family_name) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // " - b" style suffixes (kiloji - B) and proportional/variant spellings.
  if (const auto dash = s.find(" - "); dash != std::string::npos) s.erase(dash);
  for (const char* from : {"udp", "ipap", "ipaex"}) {
    const std::string f = from;
    if (const auto at = s.find(f); at != std::string::npos) s.replace(at, f.size(), f == "udp" ? "ud" : "ipa");
  }
  for (const char* from : {"pgothic", "pmincho"}) {
    const std::string f = from;
    if (const auto at = s.find(f); at != std::string::npos) s.erase(at, 1);
  }
  // Drop regional, "mono", "p", numbered-variant and width tokens.
  std::istringstream words(s);
  std::string out, w;
  while (words >> w) {
    static const char* const drop[] = {"jp", "kr", "sc", "tc", "hk", "cn", "tw", "mbe", "mono", "p", "ui",
                                       "hy", "tohaba", "sharp", "ex"};
    bool skip = std::find_if(std::begin(drop), std::end(drop), [&](const char* d) { return w == d; }) != std::end(drop);
    // Ume's C4, O5, S3 ... and MigMix's 1M, 2P ... and Migu's 1C.
    if (w.size() == 2 && ((std::isalpha(static_cast<unsigned char>(w[0])) && std::isdigit(static_cast<unsigned char>(w[1]))) ||
                          (std::isdigit(static_cast<unsigned char>(w[0])) && std::isalpha(static_cast<unsigned char>(w[1])))))
      skip = true;
    if (w.size() > 3 && w.compare(w.size() - 3, 3, "-ex") == 0) w.erase(w.size() - 3);
    if (!skip) out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

GlyphSet build_glyph_set(const BuildOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  GlyphSet g;
  const std::string key = cache_key(o, list_font_files(o.font_dirs));
  char name[64];
  std::snprintf(name, sizeof name, "glyphs_%016llx.bin", static_cast<unsigned long long>(fnv1a(key)));
  const std::string cache_path = o.cache_dir.empty() ? std::string() : o.cache_dir + "/" + name;
  if (!cache_path.empty() && load(cache_path, key, g)) {
    if (o.verbose)
      std::printf("glyph set loaded from %s (%.1fs)\n", cache_path.c_str(),
                  std::chrono::duration<double>(clock::now() - t0).count());
    return g;
  }
  std::vector<FaceInfo> all = find_faces(o.font_dirs);
  // Coverage of every face; the qualifying ones, in path order.
  std::vector<FaceInfo> faces;
  std::vector<char> common(kLast - kFirst + 1, 1);
  for (const FaceInfo& f : all) {
    Face face(f);
    const auto cov = face.coverage(kFirst, kLast);
    if (static_cast<int>(cov.size()) < o.min_coverage) continue;
    if (o.max_faces > 0 && static_cast<int>(faces.size()) >= o.max_faces) break;
    std::vector<char> has(common.size(), 0);
    for (std::uint32_t c : cov) has[c - kFirst] = 1;
    for (std::size_t k = 0; k < common.size(); ++k) common[k] = common[k] && has[k];
    faces.push_back(f);
  }
  if (faces.empty())
    throw std::runtime_error("no CJK face with at least " + std::to_string(o.min_coverage) +
                             " ideographs found (install the fonts: see examples/glyphs/README.md)");
  // Faces that map characters without drawing them (outline-less or blank glyphs: Baekmuk
  // Headline, SetoFont-ex) or with many gaps are dropped: more than `max_blank` of a probe of the
  // common characters without ink. The common set is then recomputed without them.
  {
    std::vector<std::uint32_t> probe;
    for (std::size_t k = 0; k < common.size(); k += 17)
      if (common[k]) probe.push_back(kFirst + static_cast<std::uint32_t>(k));
    std::vector<char> keep_face(faces.size(), 1);
    parallel_for(static_cast<int>(faces.size()), o.threads, [&](int f) {
      Face face(faces[static_cast<std::size_t>(f)]);
      std::vector<std::uint8_t> img(static_cast<std::size_t>(o.render.size * o.render.size));
      int blank = 0;
      for (std::uint32_t c : probe) blank += face.render(c, o.render, img.data()) ? 0 : 1;
      keep_face[static_cast<std::size_t>(f)] = blank <= o.max_blank * static_cast<double>(probe.size());
    });
    std::vector<FaceInfo> kept;
    std::fill(common.begin(), common.end(), 1);
    for (std::size_t f = 0; f < faces.size(); ++f) {
      if (!keep_face[f]) {
        if (o.verbose) std::printf("  skipping %s: too many blank glyphs\n", faces[f].label().c_str());
        continue;
      }
      kept.push_back(faces[f]);
      Face face(faces[f]);
      std::vector<char> has(common.size(), 0);
      for (std::uint32_t c : face.coverage(kFirst, kLast)) has[c - kFirst] = 1;
      for (std::size_t k = 0; k < common.size(); ++k) common[k] = common[k] && has[k];
    }
    faces = kept;
  }
  std::vector<std::uint32_t> chars;
  for (std::size_t k = 0; k < common.size(); ++k)
    if (common[k]) chars.push_back(kFirst + static_cast<std::uint32_t>(k));
  if (o.max_chars > 0 && static_cast<int>(chars.size()) > o.max_chars) {  // evenly spaced subset
    std::vector<std::uint32_t> sub;
    for (int k = 0; k < o.max_chars; ++k)
      sub.push_back(chars[static_cast<std::size_t>(k) * chars.size() / static_cast<std::size_t>(o.max_chars)]);
    chars = sub;
  }

  g.size = o.render.size;
  g.faces_found = static_cast<int>(faces.size());

  const int px = o.render.size * o.render.size;
  const int F = static_cast<int>(faces.size());
  // 1. The sample: evenly spaced characters, rendered in every face.
  std::vector<std::uint32_t> sample;
  const int S = std::min<int>(o.sample_chars, static_cast<int>(chars.size()));
  for (int k = 0; k < S; ++k) sample.push_back(chars[static_cast<std::size_t>(k) * chars.size() / static_cast<std::size_t>(S)]);
  std::vector<std::vector<std::uint8_t>> sample_px(static_cast<std::size_t>(F));
  std::vector<std::vector<char>> sample_ok(static_cast<std::size_t>(F));
  parallel_for(F, o.threads, [&](int f) {
    Face face(faces[static_cast<std::size_t>(f)]);
    auto& img = sample_px[static_cast<std::size_t>(f)];
    auto& ok = sample_ok[static_cast<std::size_t>(f)];
    img.assign(static_cast<std::size_t>(S) * static_cast<std::size_t>(px), 0);
    ok.assign(static_cast<std::size_t>(S), 0);
    for (int c = 0; c < S; ++c)
      ok[static_cast<std::size_t>(c)] = face.render(sample[static_cast<std::size_t>(c)], o.render,
                                                    img.data() + static_cast<std::size_t>(c) * static_cast<std::size_t>(px));
  });
  // 2. Distances between faces; styles and families by single linkage.
  std::vector<double> dist(static_cast<std::size_t>(F) * static_cast<std::size_t>(F), 0.0);
  parallel_for(F, o.threads, [&](int a) {
    for (int b = a + 1; b < F; ++b)
      dist[static_cast<std::size_t>(a * F + b)] = dist[static_cast<std::size_t>(b * F + a)] =
          distance(sample_px[static_cast<std::size_t>(a)], sample_px[static_cast<std::size_t>(b)],
                   sample_ok[static_cast<std::size_t>(a)], sample_ok[static_cast<std::size_t>(b)], px);
  });
  UnionFind style_of(F), family_of(F);
  std::map<std::string, int> first_with_key;
  for (int a = 0; a < F; ++a) {
    const std::string k = family_key(faces[static_cast<std::size_t>(a)].family);
    const auto [it, inserted] = first_with_key.emplace(k, a);
    if (!inserted) family_of.unite(it->second, a);
    for (int b = 0; b < a; ++b) {
      const double d = dist[static_cast<std::size_t>(a * F + b)];
      if (d < o.style_merge) style_of.unite(a, b);
      if (d < o.family_merge) family_of.unite(a, b);
    }
  }
  std::vector<int> rep;  // the first face of every style
  std::map<int, int> style_index, family_index;
  for (int a = 0; a < F; ++a) {
    const int r = style_of.find(a);
    if (style_index.count(r) == 0) {
      style_index[r] = static_cast<int>(g.styles.size());
      rep.push_back(a);
      const int fr = family_of.find(a);
      if (family_index.count(fr) == 0) {
        family_index[fr] = static_cast<int>(g.families.size());
        g.families.push_back(family_key(faces[static_cast<std::size_t>(fr)].family));
      }
      g.styles.push_back({faces[static_cast<std::size_t>(a)].label(), family_index[fr], {}});
    }
    g.styles[static_cast<std::size_t>(style_index[r])].faces.push_back(faces[static_cast<std::size_t>(a)].label());
  }
  // 3. Every character in every style; characters without ink in some style are dropped.
  const int nS = static_cast<int>(g.styles.size());
  const std::size_t C = chars.size();
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(nS) * C * static_cast<std::size_t>(px));
  std::vector<char> ok(static_cast<std::size_t>(nS) * C, 0);
  parallel_for(nS, o.threads, [&](int s) {
    Face face(faces[static_cast<std::size_t>(rep[static_cast<std::size_t>(s)])]);
    for (std::size_t c = 0; c < C; ++c)
      ok[static_cast<std::size_t>(s) * C + c] =
          face.render(chars[c], o.render, pixels.data() + (static_cast<std::size_t>(s) * C + c) * static_cast<std::size_t>(px));
  });
  std::vector<std::size_t> keep;
  for (std::size_t c = 0; c < C; ++c) {
    bool all_ok = true;
    for (int s = 0; s < nS && all_ok; ++s) all_ok = ok[static_cast<std::size_t>(s) * C + c] != 0;
    if (all_ok) keep.push_back(c);
  }
  for (std::size_t c : keep) g.chars.push_back(chars[c]);
  g.pixels.resize(static_cast<std::size_t>(nS) * keep.size() * static_cast<std::size_t>(px));
  for (int s = 0; s < nS; ++s)
    for (std::size_t k = 0; k < keep.size(); ++k)
      std::copy_n(pixels.data() + (static_cast<std::size_t>(s) * C + keep[k]) * static_cast<std::size_t>(px), px,
                  g.pixels.data() + (static_cast<std::size_t>(s) * keep.size() + k) * static_cast<std::size_t>(px));
  if (o.verbose)
    std::printf("rendered %zu characters x %d styles (%d families) from %d faces in %.1fs\n", g.chars.size(), nS,
                g.num_families(), F, std::chrono::duration<double>(clock::now() - t0).count());
  if (!cache_path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.cache_dir, ec);
    save(cache_path, key, g);
  }
  return g;
}

Split make_split(const GlyphSet& g, const SplitOptions& o) {
  Split s;
  std::mt19937 rng(o.seed * 7919u + 17u);
  // Characters.
  std::vector<int> ch(static_cast<std::size_t>(g.num_chars()));
  std::iota(ch.begin(), ch.end(), 0);
  std::shuffle(ch.begin(), ch.end(), rng);
  const int n = g.num_chars();
  const int held = std::min(o.held_out_chars, n / 3), val = std::min(o.val_chars, n / 6);
  s.held_out_chars.assign(ch.begin(), ch.begin() + held);
  s.val_chars.assign(ch.begin() + held, ch.begin() + held + val);
  const auto rest = static_cast<std::ptrdiff_t>(n - held - val);
  const auto train = o.train_chars > 0 ? std::min<std::ptrdiff_t>(o.train_chars, rest) : rest;
  s.train_chars.assign(ch.begin() + held + val, ch.begin() + held + val + train);
  for (auto* v : {&s.held_out_chars, &s.val_chars, &s.train_chars}) std::sort(v->begin(), v->end());
  // Families, in random order: a family joins the held-out part while the part's styles stay
  // within its share, then likewise the validation part; every other family trains. A family
  // larger than a share (Noto Sans CJK and Noto Serif CJK: 28 styles each, 7 weights x 4
  // regional designs) therefore always trains, and the held-out part is several designs, not
  // the weights of one. A part left empty takes the smallest training family.
  std::vector<int> styles_in(static_cast<std::size_t>(g.num_families()), 0);
  for (const Style& st : g.styles) ++styles_in[static_cast<std::size_t>(st.family)];
  std::vector<int> fam(static_cast<std::size_t>(g.num_families()));
  std::iota(fam.begin(), fam.end(), 0);
  std::shuffle(fam.begin(), fam.end(), rng);
  const double total = g.num_styles();
  int held_styles = 0, val_styles = 0;
  for (const int f : fam) {
    const int m = styles_in[static_cast<std::size_t>(f)];
    if (held_styles + m <= o.held_out_style_share * total) {
      s.held_out_families.push_back(f);
      held_styles += m;
    } else if (val_styles + m <= o.val_style_share * total) {
      s.val_families.push_back(f);
      val_styles += m;
    } else {
      s.train_families.push_back(f);
    }
  }
  for (auto* part : {&s.held_out_families, &s.val_families})
    if (part->empty() && s.train_families.size() > 1) {
      const auto smallest = std::min_element(s.train_families.begin(), s.train_families.end(), [&](int a, int b) {
        return styles_in[static_cast<std::size_t>(a)] < styles_in[static_cast<std::size_t>(b)];
      });
      part->push_back(*smallest);
      s.train_families.erase(smallest);
    }
  for (auto* v : {&s.held_out_families, &s.val_families, &s.train_families}) std::sort(v->begin(), v->end());
  auto in = [](const std::vector<int>& v, int x) { return std::binary_search(v.begin(), v.end(), x); };
  for (int st = 0; st < g.num_styles(); ++st) {
    const int f = g.styles[static_cast<std::size_t>(st)].family;
    (in(s.held_out_families, f) ? s.held_out_styles : in(s.val_families, f) ? s.val_styles : s.train_styles).push_back(st);
  }
  return s;
}

}  // namespace glyphs
