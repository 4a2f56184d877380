// Configured by the consumer project with find_package(marginloss CONFIG REQUIRED COMPONENTS cuda).
#include <marginloss/cuda/cuda.cuh>

int main() { return 0; }
