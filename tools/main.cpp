#include "tools/cli.h"

int main(int argc, char** argv) { return kdseg::tools::run(argc, argv); }
