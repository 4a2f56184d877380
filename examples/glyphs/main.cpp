// Open-set verification of printed CJK ideographs: the face-recognition protocol on glyphs.
// Classes are characters, "photos" are their renderings in the installed CJK font styles.
// Train on training characters x training font families; verify held-out characters rendered
// in held-out font families, by the cosine of two embeddings. README.md next to this file has
// the protocol, the results and how they were measured.
//
//   ./glyphs [--out DIR] [--seed N | --seeds A,B,C] [--all] [--epochs N] [--help for more]
//
// Writes OUT/glyphs_results.json (a list, per loss), OUT/glyphs_split.json, with --seeds also
// OUT/glyphs_seeds.json, and with gnuplot the figures OUT/glyphs_roc.png,
// OUT/glyphs_samples.png, OUT/glyphs_tar_seeds.png.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dataset.hpp"
#include "evaluate.hpp"
#include "heads.hpp"
#include "plots.hpp"
#include "train.hpp"

#ifndef GLYPHS_DEFAULT_CACHE_DIR
#define GLYPHS_DEFAULT_CACHE_DIR ""
#endif

namespace {

using namespace glyphs;

struct Options {
  std::string out = ".";
  std::string cache = GLYPHS_DEFAULT_CACHE_DIR;
  std::vector<std::string> font_dirs{"/usr/share/fonts"};
  std::vector<unsigned> seeds{1};
  std::vector<std::string> losses = default_losses();
  TrainConfig train;
  HeadConfig head;  // loss filled per run
  SplitOptions split;
  int max_chars = 0, max_faces = 0;
  std::size_t impostors = 5000000;
  int jobs = 1;
  int threads = 1;
  bool validate = false, plots = true;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: glyphs [--out DIR] [--seed N | --seeds A,B,...] [--all] [--epochs N] [options]\n"
               "  --out DIR        results and figures (default .)\n"
               "  --seed N         initialisation, character split and family split (default 1)\n"
               "  --seeds A,B,...  one run per seed; glyphs_results.json has the first, glyphs_seeds.json all,\n"
               "                   glyphs_tar_seeds.png the spread\n"
               "  --all            also combined, svsoftmax, mvsoftmax, curricularface, ammsoftmax, adaptiveface\n"
               "  --only LIST      comma-separated losses (softmax, normface, cosface, arcface, sphereface, combined,\n"
               "                   svsoftmax, mvsoftmax, curricularface, ammsoftmax, adaptiveface)\n"
               "  --epochs N       passes over the training images (default 4)\n"
               "  --validate       verify the validation characters in the validation families instead of\n"
               "                   the held-out ones: the split for choosing hyper-parameters\n"
               "  --dim D  --hidden H  --batch B  --lr LR  --wd WD  --no-aug\n"
               "  --s S  --m M     override every margin loss's published scale / margin\n"
               "  --arc-grad straight|exact   margin derivative of ArcFace, combined margin (default straight)\n"
               "  --sphere-scale norm|fixed   SphereFace's scale (default norm: the feature norm)\n"
               "  --held-out-chars N  --val-chars N  --train-chars N   split sizes (default 1000, 300, 2000;\n"
               "                   --train-chars 0: every character not held out or validation)\n"
               "  --impostors N    impostor pairs sampled when there are more (default 5000000)\n"
               "  --fonts DIR      font directory (default /usr/share/fonts; repeatable)\n"
               "  --cache DIR      where the rendered set is cached (default: the build directory)\n"
               "  --no-cache       render every time\n"
               "  --max-chars N  --max-faces N   a small subset (tests)\n"
               "  --jobs N         with --seeds: train N seeds at once, a thread each\n"
               "  --threads N      Eigen threads per training (default 1: the results are then the same\n"
               "                   bit for bit whatever the machine's thread count and --jobs)\n"
               "  --no-plots       skip gnuplot\n");
  std::exit(code);
}

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "glyphs: %s (--help for the options)\n", what.c_str());
  std::exit(2);
}

long to_long(const std::string& a, const std::string& v) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') usage_error(a + " wants an integer, not '" + v + "'");
  return x;
}
float to_float(const std::string& a, const std::string& v) {
  char* end = nullptr;
  const float x = std::strtof(v.c_str(), &end);
  if (v.empty() || *end != '\0') usage_error(a + " wants a number, not '" + v + "'");
  return x;
}

Options parse(int argc, char** argv) {
  Options o;
  bool fonts_given = false, all = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") o.out = value();
    else if (a == "--seed") o.seeds = {static_cast<unsigned>(to_long(a, value()))};
    else if (a == "--seeds") {
      o.seeds.clear();
      std::stringstream list(value());
      for (std::string s; std::getline(list, s, ',');) o.seeds.push_back(static_cast<unsigned>(to_long(a, s)));
      if (o.seeds.empty()) usage_error("--seeds wants at least one seed");
    }
    else if (a == "--all") all = true;
    else if (a == "--only") only = value();
    else if (a == "--epochs") o.train.epochs = static_cast<int>(to_long(a, value()));
    else if (a == "--validate") o.validate = true;
    else if (a == "--dim") o.train.dim = static_cast<int>(to_long(a, value()));
    else if (a == "--hidden") o.train.hidden = static_cast<int>(to_long(a, value()));
    else if (a == "--batch") o.train.batch = static_cast<int>(to_long(a, value()));
    else if (a == "--lr") o.train.lr = to_float(a, value());
    else if (a == "--wd") o.train.wd = to_float(a, value());
    else if (a == "--no-aug") o.train.augment = false;
    else if (a == "--s") o.head.s = to_float(a, value());
    else if (a == "--m") o.head.m = to_float(a, value());
    else if (a == "--arc-grad") {
      const std::string v = value();
      if (v != "exact" && v != "straight") usage_error("--arc-grad is exact or straight, not '" + v + "'");
      o.head.arc_straight = v == "straight";
    }
    else if (a == "--sphere-scale") {
      const std::string v = value();
      if (v != "norm" && v != "fixed") usage_error("--sphere-scale is norm or fixed, not '" + v + "'");
      o.head.sphere_fixed = v == "fixed";
    }
    else if (a == "--held-out-chars") o.split.held_out_chars = static_cast<int>(to_long(a, value()));
    else if (a == "--val-chars") o.split.val_chars = static_cast<int>(to_long(a, value()));
    else if (a == "--train-chars") o.split.train_chars = static_cast<int>(to_long(a, value()));
    else if (a == "--impostors") o.impostors = static_cast<std::size_t>(to_long(a, value()));
    else if (a == "--fonts") {
      if (!fonts_given) o.font_dirs.clear();
      fonts_given = true;
      o.font_dirs.push_back(value());
    }
    else if (a == "--cache") o.cache = value();
    else if (a == "--no-cache") o.cache.clear();
    else if (a == "--max-chars") o.max_chars = static_cast<int>(to_long(a, value()));
    else if (a == "--max-faces") o.max_faces = static_cast<int>(to_long(a, value()));
    else if (a == "--no-plots") o.plots = false;
    else if (a == "--jobs") o.jobs = static_cast<int>(to_long(a, value()));
    else if (a == "--threads") o.threads = static_cast<int>(to_long(a, value()));
    else if (a == "--help" || a == "-h") usage(0);
    else usage_error("unknown option '" + a + "'");
  }
  if (all) o.losses = all_losses();
  if (!only.empty()) {
    o.losses.clear();
    std::stringstream list(only);
    for (std::string s; std::getline(list, s, ',');) {
      if (std::find(all_losses().begin(), all_losses().end(), s) == all_losses().end())
        usage_error("--only: unknown loss '" + s + "'");
      o.losses.push_back(s);
    }
  }
  if (o.losses.empty()) usage_error("no loss selected");
  if (o.jobs < 1) usage_error("--jobs must be >= 1");
  if (o.threads < 1) usage_error("--threads must be >= 1");
  if (o.train.epochs < 1) usage_error("--epochs must be >= 1");
  if (o.train.dim < 2 || o.train.hidden < 1 || o.train.batch < 2) usage_error("--dim, --hidden, --batch too small");
  if (o.split.held_out_chars < 2 || o.split.val_chars < 2 || o.split.train_chars < 0) usage_error("split sizes must be >= 2");
  return o;
}

std::string join_names(const GlyphSet& g, const std::vector<int>& families) {
  std::string s;
  for (int f : families) s += (s.empty() ? "" : ", ") + g.families[static_cast<std::size_t>(f)];
  return s;
}

void write_rows(std::ostream& js, const std::vector<LossResult>& rows, const char* indent) {
  char buf[640];
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const LossResult& r = rows[k];
    std::snprintf(buf, sizeof buf,
                  "%s{\"loss\": \"%s\", \"roc_auc\": %.6f, \"tar_far_1e-2\": %.6f, \"tar_far_1e-3\": %.6f, "
                  "\"tar_far_1e-4\": %.6f, \"intra_angle_deg\": %.4f, \"inter_angle_deg\": %.4f, "
                  "\"closed_set_acc\": %.6f, \"train_seconds\": %.1f}%s\n",
                  indent, r.loss.c_str(), r.held_out.v.auc, r.held_out.tar_1e2, r.held_out.tar_1e3,
                  r.held_out.tar_1e4, r.held_out.intra_deg, r.held_out.inter_deg, r.closed_acc, r.train_seconds,
                  k + 1 < rows.size() ? "," : "");
    js << buf;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto t_start = std::chrono::steady_clock::now();
  // Eigen's products split their blocks by the thread count, which changes float summation
  // order: one thread by default keeps every run reproducible (measured on 2 busy cores,
  // one thread per training was also the faster choice: README.md).
  Eigen::setNbThreads(opt.threads);
  {
    std::error_code ec;
    std::filesystem::create_directories(opt.out, ec);
    if (ec) {
      std::fprintf(stderr, "cannot create %s: %s\n", opt.out.c_str(), ec.message().c_str());
      return 1;
    }
  }
  BuildOptions bo;
  bo.font_dirs = opt.font_dirs;
  bo.cache_dir = opt.cache;
  bo.max_chars = opt.max_chars;
  bo.max_faces = opt.max_faces;
  GlyphSet g;
  try {
    g = build_glyph_set(bo);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "glyphs: %s\n", e.what());
    return 1;
  }
  std::printf("glyph set: %d characters (CJK Unified Ideographs in every face) x %d styles in %d families, from %d "
              "faces, %dx%d pixels\n",
              g.num_chars(), g.num_styles(), g.num_families(), g.faces_found, g.size, g.size);
  const TrainConfig& tc = opt.train;
  std::printf("network: MLP %d-%d-ReLU-%d, SGD momentum %.1f, batch %d, lr %g (10%% warm-up + cosine), wd %g, %d "
              "epochs, %s\n",
              g.size * g.size, tc.hidden, tc.dim, static_cast<double>(tc.momentum), tc.batch,
              static_cast<double>(tc.lr), static_cast<double>(tc.wd), tc.epochs,
              tc.augment ? "affine + stroke-width + noise augmentation" : "no augmentation");

  const int n_seeds = static_cast<int>(opt.seeds.size());
  std::vector<SeedResults> runs(opt.seeds.size());
  std::vector<Split> splits(opt.seeds.size());
  std::vector<int> failed(opt.seeds.size(), 0);
  // One seed: its split, every loss trained and evaluated.
  auto run_seed = [&](int si) {
    const unsigned seed = opt.seeds[static_cast<std::size_t>(si)];
    SplitOptions so = opt.split;
    so.seed = seed;
    const Split sp = make_split(g, so);
    splits[static_cast<std::size_t>(si)] = sp;
    std::printf("\nseed %u: %zu training / %zu validation / %zu held-out characters; styles %zu / %zu / %zu in "
                "families %zu / %zu / %zu\n  held-out families: %s\n  validation families: %s\n",
                seed, sp.train_chars.size(), sp.val_chars.size(), sp.held_out_chars.size(), sp.train_styles.size(),
                sp.val_styles.size(), sp.held_out_styles.size(), sp.train_families.size(), sp.val_families.size(),
                sp.held_out_families.size(), join_names(g, sp.held_out_families).c_str(),
                join_names(g, sp.val_families).c_str());
    if (sp.train_styles.empty() || sp.held_out_styles.empty() || sp.val_styles.empty()) {
      std::fprintf(stderr, "glyphs: too few font families for the split (need 3)\n");
      failed[static_cast<std::size_t>(si)] = 1;
      return;
    }
    const ImageList train_set = make_images(sp.train_styles, sp.train_chars);
    const ImageList closed = make_images(sp.val_styles, sp.train_chars);  // training classes, unseen styles
    const ImageList open = opt.validate ? make_images(sp.val_styles, sp.val_chars)
                                        : make_images(sp.held_out_styles, sp.held_out_chars);
    const Standardise st = standardise_of(g, train_set);
    const Mat closed_in = inputs(g, closed, st), open_in = inputs(g, open, st);
    std::printf("  seed %u: training on %d images of %zu classes; verification on %d %s images; closed set on %d "
                "images (training characters, validation families)\n",
                seed, train_set.size(), sp.train_chars.size(), open.size(), opt.validate ? "validation" : "held-out",
                closed.size());
    SeedResults& run = runs[static_cast<std::size_t>(si)];
    run.seed = seed;
    for (const std::string& loss : opt.losses) {
      HeadConfig hc = opt.head;
      hc.loss = loss;
      TrainConfig cfg = tc;
      cfg.seed = seed;
      const std::string tag = n_seeds > 1 ? loss + "/" + std::to_string(seed) : loss;
      std::unique_ptr<Head> head = make_head(hc, static_cast<int>(sp.train_chars.size()), 0);
      std::printf("  %s%s\n", head->describe().c_str(), n_seeds > 1 ? (" (seed " + std::to_string(seed) + ")").c_str() : "");
      Trained t = train(tag, std::move(head), g, train_set, static_cast<int>(sp.train_chars.size()), st, cfg);
      LossResult r;
      r.loss = loss;
      r.train_seconds = t.seconds;
      r.held_out = verify(t.net->embed(open_in), open.label, opt.impostors, 0x5eed0000ull + seed);
      r.closed_acc = closed_set_accuracy(*t.head, t.net->embed(closed_in), t.W, closed.label);
      std::printf("  %-14s AUC %.4f  TAR@1e-2 %.4f  TAR@1e-3 %.4f  TAR@1e-4 %.4f  closed acc %.4f  (%.0fs; %zu "
                  "genuine, %zu impostor pairs)\n",
                  tag.c_str(), r.held_out.v.auc, r.held_out.tar_1e2, r.held_out.tar_1e3, r.held_out.tar_1e4,
                  r.closed_acc, r.train_seconds, r.held_out.v.genuine, r.held_out.v.impostor);
      std::fflush(stdout);
      run.rows.push_back(std::move(r));
    }
  };
  // --jobs: seeds trained concurrently, one thread each (set OMP_NUM_THREADS=1 then).
  for (int first = 0; first < n_seeds; first += opt.jobs) {
    std::vector<std::thread> pool;
    for (int si = first; si < std::min(n_seeds, first + opt.jobs); ++si) pool.emplace_back(run_seed, si);
    for (auto& th : pool) th.join();
  }
  if (std::any_of(failed.begin(), failed.end(), [](int f) { return f != 0; })) return 1;
  const Split& first_split = splits[0];
  for (const SeedResults& run : runs) {
    std::printf("\nseed %u%s\n%-15s %8s %9s %9s %9s %9s %9s %10s %8s\n", run.seed,
                opt.validate ? " (VALIDATION split)" : "", "loss", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "TAR@1e-4",
                "intra deg", "inter deg", "closed acc", "train s");
    for (const LossResult& r : run.rows)
      std::printf("%-15s %8.4f %9.4f %9.4f %9.4f %9.2f %9.2f %10.4f %8.0f\n", r.loss.c_str(), r.held_out.v.auc,
                  r.held_out.tar_1e2, r.held_out.tar_1e3, r.held_out.tar_1e4, r.held_out.intra_deg,
                  r.held_out.inter_deg, r.closed_acc, r.train_seconds);
  }

  // JSON: the first seed's list; the split sizes in a second file; every seed with --seeds.
  {
    std::ofstream js(opt.out + "/glyphs_results.json");
    js << "[\n";
    write_rows(js, runs[0].rows, "  ");
    js << "]\n";
    std::ofstream sj(opt.out + "/glyphs_split.json");
    const Split& sp = first_split;
    sj << "{\"seed\": " << opt.seeds[0] << ", \"characters\": " << g.num_chars() << ", \"styles\": " << g.num_styles()
       << ", \"families\": " << g.num_families() << ", \"faces\": " << g.faces_found
       << ", \"train_characters\": " << sp.train_chars.size() << ", \"val_characters\": " << sp.val_chars.size()
       << ", \"held_out_characters\": " << sp.held_out_chars.size() << ", \"train_styles\": " << sp.train_styles.size()
       << ", \"val_styles\": " << sp.val_styles.size() << ", \"held_out_styles\": " << sp.held_out_styles.size()
       << ", \"train_families\": " << sp.train_families.size() << ", \"val_families\": " << sp.val_families.size()
       << ", \"held_out_families\": " << sp.held_out_families.size() << ", \"evaluated_on\": \""
       << (opt.validate ? "validation" : "held-out") << "\"}\n";
    if (runs.size() > 1) {
      std::ofstream all(opt.out + "/glyphs_seeds.json");
      all << "[\n";
      for (std::size_t k = 0; k < runs.size(); ++k) {
        all << "  {\"seed\": " << runs[k].seed << ", \"results\": [\n";
        write_rows(all, runs[k].rows, "    ");
        all << "  ]}" << (k + 1 < runs.size() ? "," : "") << "\n";
      }
      all << "]\n";
    }
  }
  std::printf("\nwrote %s/glyphs_results.json, %s/glyphs_split.json%s\n", opt.out.c_str(), opt.out.c_str(),
              runs.size() > 1 ? (", " + opt.out + "/glyphs_seeds.json").c_str() : "");
  if (opt.plots) {
    char title[200];
    std::snprintf(title, sizeof title, "held-out characters (%zu) in held-out font families (%zu styles), seed %u",
                  first_split.held_out_chars.size(), first_split.held_out_styles.size(), opt.seeds[0]);
    std::vector<int> sample_chars;
    for (int k = 1; k <= 5 && k < static_cast<int>(first_split.held_out_chars.size()); ++k)
      sample_chars.push_back(first_split.held_out_chars[static_cast<std::size_t>(k) * first_split.held_out_chars.size() / 6]);
    bool ok = plot_roc(opt.out, runs[0].rows, opt.validate ? "validation split" : title);
    ok = plot_samples(opt.out, g, sample_chars, first_split.train_styles, first_split.held_out_styles) && ok;
    ok = plot_tar_seeds(opt.out, runs) && ok;
    if (ok)
      std::printf("figures: %s/glyphs_roc.png, %s/glyphs_samples.png, %s/glyphs_tar_seeds.png\n", opt.out.c_str(),
                  opt.out.c_str(), opt.out.c_str());
  }
  std::printf("total %.1fs\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  return 0;
}
