// A training run's curves for report.html, from its metrics.jsonl (docs/formats.md): loss and
// learning rate per logged step, validation Dice and ECE per validation. A resumed run's repeated
// steps count once (the later line wins), so that it reads as one curve. No LibTorch here.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace kdseg::eval {

// report.json's "curves" of a model: {source, steps: [...], loss: [...], lr: [...], validation:
// {steps: [...], dice: [...], ece: [...]}}, at most `max_points` per series (evenly thinned, the
// last kept); null when the file does not exist. Lines that are not JSON objects are skipped
// (a line cut short by a crash); a file that cannot be read is an error naming it.
nlohmann::json read_training_curves(const std::string& metrics_jsonl, size_t max_points = 1000);

}  // namespace kdseg::eval
