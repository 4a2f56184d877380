#include "report.hpp"

#include <cstdio>
#include <fstream>

namespace fashion_mnist {

void print_table(const std::vector<Row>& rows) {
  std::printf("%-14s %8s %10s %10s %10s %10s %11s\n", "loss", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "intra deg",
              "inter deg", "closed acc");
  for (const Row& r : rows)
    std::printf("%-14s %8.4f %10.4f %10.4f %10.2f %10.2f %11.4f\n", r.loss.c_str(), r.open.v.auc, r.open.tar_1e2,
                r.open.tar_1e3, r.open.intra_deg, r.open.inter_deg, r.closed_acc);
}

bool write_json(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream js(path);
  if (!js) return false;
  char buf[512];
  js << "[\n";
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const Row& r = rows[k];
    std::snprintf(buf, sizeof buf,
                  "  {\"loss\": \"%s\", \"roc_auc\": %.6f, \"tar_far_1e-2\": %.6f, \"tar_far_1e-3\": %.6f, "
                  "\"intra_angle_deg\": %.4f, \"inter_angle_deg\": %.4f, \"closed_set_acc\": %.6f}%s\n",
                  r.loss.c_str(), r.open.v.auc, r.open.tar_1e2, r.open.tar_1e3, r.open.intra_deg, r.open.inter_deg,
                  r.closed_acc, k + 1 < rows.size() ? "," : "");
    js << buf;
  }
  js << "]\n";
  return true;
}

void report_margin_sweep(const std::string& dat, float s, const std::vector<float>& margins,
                         const std::vector<Row>& sweep, const Row* softmax) {
  std::printf("\nadditive cosine margin sweep, s = %g (m = 0: NormFace, m > 0: CosFace):\n", double(s));
  std::printf("%8s %8s %10s %10s %10s\n", "m", "ROC AUC", "TAR@1e-2", "TAR@1e-3", "closed acc");
  std::ofstream f(dat);
  f << "# m roc_auc tar_far_1e-2 tar_far_1e-3 closed_set_acc (softmax, same run: "
    << (softmax ? std::to_string(softmax->open.v.auc) + " " + std::to_string(softmax->open.tar_1e3)
                : std::string("not run"))
    << ")\n";
  for (std::size_t k = 0; k < sweep.size(); ++k) {
    const Row& r = sweep[k];
    std::printf("%+8.3f %8.4f %10.4f %10.4f %10.4f\n", double(margins[k]), r.open.v.auc, r.open.tar_1e2, r.open.tar_1e3,
                r.closed_acc);
    f << margins[k] << ' ' << r.open.v.auc << ' ' << r.open.tar_1e2 << ' ' << r.open.tar_1e3 << ' ' << r.closed_acc
      << '\n';
  }
  std::printf("wrote %s\n", dat.c_str());
}

}  // namespace fashion_mnist
