// Training: one embedding network and the class weights W with one loss head, by SGD with
// momentum, one epoch of linear warm-up then cosine decay of the learning rate; batches drawn by
// shuffling, or by Adaptive Data Sampling (--ads, and always for AdaptiveFace).
#pragma once
#include <memory>
#include <string>

#include "data.hpp"
#include "network.hpp"
#include "types.hpp"

namespace fashion_mnist {

struct TrainConfig {
  int epochs = 8;
  int batch = 128;
  int dim = 32;
  float lr = 0.05f;  // peak; cosine decay to 0 after one epoch of linear warm-up
  float momentum = 0.9f;
  float wd = 5e-4f;
  float dropout = 0.f;  // on the hidden layer
  bool aug = false;     // random shifts and flips
  bool conv = false;    // ConvNet instead of MlpNet
  bool bn = false;      // batch normalisation of the embedding
  bool ads = false;     // Adaptive Data Sampling for every loss
  unsigned seed = 1;
  bool verbose = true;
};

struct Trained {
  Mat W;  // class weights (C x D)
  std::unique_ptr<Net> net;
};

// Trains on `data` (labels 0..classes-1), printing one line per epoch (and the head's summary)
// when cfg.verbose. Defined in train.cpp for the heads of heads.hpp.
template <typename Head>
Trained train(const std::string& name, Head head, const Subset& data, int classes, const TrainConfig& cfg);

}  // namespace fashion_mnist
