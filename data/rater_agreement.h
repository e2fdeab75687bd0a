// How much a case's raters agree with each other: the mean Dice over every pair of raters, per
// structure, on the case's whole volume at its own voxels (before any resampling), the number
// KiTS23's organisers and agreement studies report. `prepare` stores it per case and prints its
// distribution, and evaluate's report shows it, so that a reader knows how much the labels
// disagreed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/layout.h"

namespace kdseg::data {

// A structure whose agreement is measured: the voxels whose label is one of `labels`.
struct AgreementRegion {
  std::string name;
  std::vector<uint8_t> labels;
};

// KiTS: kidney (1, 2 and 3: a kidney's annotation covers its masses), tumor (2) and cyst (3), as
// KiTS23's agreement is measured per structure; QUBIQ: the task's mask (1); others: each label.
std::vector<AgreementRegion> agreement_regions(Layout layout);

// Rater label maps [R,*] uint8 -> per region, the mean Dice over the R(R-1)/2 pairs of raters (a
// pair of empty masks counts 1), or NaN where no rater marks the region (absent from the case)
// or R < 2.
std::vector<double> pairwise_dice(const at::Tensor& raters, const std::vector<AgreementRegion>& regions);

// The distribution of one region's per-case values, NaN (absent) left out; percentiles by linear
// interpolation between order statistics (numpy's default).
struct AgreementSummary {
  int64_t cases = 0;  // where the region is present
  double median = 0, p10 = 0, p90 = 0, min = 0, max = 0;
};
AgreementSummary summarize_agreement(std::vector<double> values);
// p in [0, 1] of sorted, non-empty `sorted`.
double percentile(const std::vector<double>& sorted, double p);

// "kidney 0.977 [0.969, 0.987] (251 cases), tumor ..." : median [10th, 90th percentile].
std::string describe_agreement(const std::vector<AgreementRegion>& regions,
                               const std::vector<std::vector<double>>& per_case);

}  // namespace kdseg::data
