// The results: the table of every loss, fashion_mnist_results.json, and the margin sweep's table
// and fashion_mnist_margin_sweep.dat.
#pragma once
#include <string>
#include <vector>

#include "evaluate.hpp"

namespace fashion_mnist {

void print_table(const std::vector<Row>& rows);

// One object per loss; false when `path` cannot be written.
bool write_json(const std::string& path, const std::vector<Row>& rows);

// The sweep's table (margin `margins[k]` for `sweep[k]`) and `dat`, whose header names softmax's
// AUC and TAR@1e-3 of the same run (`softmax`, null when it was not run).
void report_margin_sweep(const std::string& dat, float s, const std::vector<float>& margins,
                         const std::vector<Row>& sweep, const Row* softmax);

}  // namespace fashion_mnist
