#include "eval/report.h"
#include "student/trainer.h"
#include "data/loader.h"
