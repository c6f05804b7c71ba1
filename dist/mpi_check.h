// MT_MPI_CHECK(expr): the check macro for MPI calls (STYLE 8). A call that does not return
// MPI_SUCCESS throws mt::Error with file:line, the expression and MPI_Error_string's message.
// Errors come back as codes only on communicators set to MPI_ERRORS_RETURN (MpiComm does that).
#pragma once

#include <mpi.h>

#include <string>

#include "core/check.h"

namespace mt::detail {

inline std::string mpi_message(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return concat("MPI error code ", code);
  return concat(std::string(text, static_cast<size_t>(length)), " (code ", code, ")");
}

[[noreturn]] inline void throw_mpi_error(const char* expr, const char* file, int line, int code) {
  throw Error(ExitCode::kRuntime,
              concat(file, ":", line, ": MPI call `", expr, "` failed: ", mpi_message(code)));
}

}  // namespace mt::detail

#define MT_MPI_CHECK(expr)                                                      \
  do {                                                                          \
    const int mt_mpi_status_ = (expr);                                          \
    if (mt_mpi_status_ != MPI_SUCCESS)                                          \
      ::mt::detail::throw_mpi_error(#expr, __FILE__, __LINE__, mt_mpi_status_); \
  } while (0)
