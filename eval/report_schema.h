// report.json from evaluate's typed results: the one writer of the schema that eval/report.h
// documents key by key and its renderer reads. NaN (and any non-finite number) is written as null.
// No LibTorch here. Internal to eval/.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "eval/evaluation_results.h"

namespace kdseg::eval::detail {

// The whole report.json; "figures" only when `results` holds them.
nlohmann::json report_json(const EvaluationResults& results);

}  // namespace kdseg::eval::detail
