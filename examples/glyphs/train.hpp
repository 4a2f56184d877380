// Training of one loss on the training characters x training styles: the same network,
// optimiser (SGD, momentum 0.9, weight decay 5e-4 on weights), schedule (linear warm-up over
// the first 10% of the steps, then cosine decay to 0) and augmentation for every loss.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "augment.hpp"
#include "dataset.hpp"
#include "heads.hpp"
#include "network.hpp"

namespace glyphs {

// Images given by (style, character) indices into a GlyphSet, labelled by class.
struct ImageList {
  std::vector<int> style, ch, label;
  int size() const { return static_cast<int>(label.size()); }
};

// Every (style, character) of the given lists; the label of character chars[k] is k.
ImageList make_images(const std::vector<int>& styles, const std::vector<int>& chars);
// Input rows (no augmentation).
Mat inputs(const GlyphSet& g, const ImageList& list, const Standardise& st);
// Mean and standard deviation of the ink of the listed images.
Standardise standardise_of(const GlyphSet& g, const ImageList& list);

struct TrainConfig {
  int epochs = 4;
  int batch = 256;
  int hidden = 256;
  int dim = 128;
  float lr = 0.1f;
  float momentum = 0.9f;
  float wd = 5e-4f;
  bool augment = true;
  unsigned seed = 1;
  bool verbose = true;
};

struct Trained {
  std::unique_ptr<Mlp> net;
  Mat W;  // class weights, C x D
  std::unique_ptr<Head> head;
  double seconds = 0;
};

Trained train(const std::string& name, std::unique_ptr<Head> head, const GlyphSet& g, const ImageList& data,
              int num_classes, const Standardise& st, const TrainConfig& cfg);

}  // namespace glyphs
