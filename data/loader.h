// The input pipeline from the prepared store to training and evaluation batches, one concern a
// header; this umbrella includes them all:
//   data/task.h          Task, make_task, dice_regions: label values to classes, the HU window
//   data/augment.h       AugmentOptions, Sample, augment, center_crop: per-sample transforms
//   data/sampler.h       DistributedSampler, evaluation_rows, evaluation_plan: rows per rank and batch
//   data/batch_loader.h  Batch, LoaderOptions, BatchLoader: prefetching reader of a plan's batches
#pragma once

#include "data/augment.h"
#include "data/batch_loader.h"
#include "data/sampler.h"
#include "data/task.h"
