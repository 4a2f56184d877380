// Stands in for the MPI tests when CMake found no MPI: says so and returns CTest's skip code.
#include <cstdio>

int main() {
  std::puts("SKIPPED: marginloss was configured without MPI (MARGINLOSS_MPI=OFF or no C++ MPI found), so the "
            "class-sharded MPI tests were not built. Install an MPI (e.g. libopenmpi-dev openmpi-bin) and "
            "reconfigure with MARGINLOSS_MPI=AUTO or ON to run them.");
  return 77;
}
