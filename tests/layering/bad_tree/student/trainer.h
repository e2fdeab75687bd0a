#pragma once
#include "core/error.h"
#include "teacher/precompute.h"
