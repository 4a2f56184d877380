// Built by the consumer project with find_package(marginloss CONFIG REQUIRED COMPONENTS mpi):
// marginloss::mpi brings MPI's headers and libraries with ml::MPICommunicator.
#include <marginloss/distributed/mpi.hpp>
#include <marginloss/marginloss.hpp>

#include <mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  namespace ml = marginloss;
  MPI_Init(&argc, &argv);
  ml::MPICommunicator comm;
  std::printf("consumer_mpi: rank %d of %d\n", comm.rank(), comm.size());
  MPI_Finalize();
  return 0;
}
