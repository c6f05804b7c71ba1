/* A tiny MPI program for the netns harness (tests/dist/multinode_test.sh): `hello` checks a start
 * across hosts (every rank names its host after an allreduce); `abort-when FILE` has rank 0 call
 * MPI_Abort once FILE exists while the other ranks wait in a barrier. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char host[256] = "?";
  gethostname(host, sizeof host);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (argc >= 3 && strcmp(argv[1], "abort-when") == 0) {
    printf("rank %d of %d on %s: waiting\n", rank, size, host);
    fflush(stdout);
    if (rank == 0) {
      while (access(argv[2], F_OK) != 0) usleep(100000);
      printf("rank 0 on %s: calling MPI_Abort\n", host);
      fflush(stdout);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    /* wait without spinning: the machine is shared and the wait may last minutes */
    MPI_Request req;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    while (!done) {
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (!done) usleep(100000);
    }
  } else {
    printf("rank %d of %d on %s: sum %d\n", rank, size, host, sum);
  }
  MPI_Finalize();
  return sum == size * (size - 1) / 2 ? 0 : 1;
}
