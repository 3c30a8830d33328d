#ifndef SPEECHAIN_CMPI_SHIM_H
#define SPEECHAIN_CMPI_SHIM_H
#include <mpi.h>

// Open MPI defines these handles as macros over global structs, which Swift cannot import;
// these inline functions hand them over as values.
static inline MPI_Comm scm_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype scm_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype scm_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype scm_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype scm_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Op scm_op_sum(void) { return MPI_SUM; }
static inline MPI_Op scm_op_min(void) { return MPI_MIN; }
static inline MPI_Op scm_op_max(void) { return MPI_MAX; }
static inline void *scm_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request scm_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *scm_status_ignore(void) { return MPI_STATUS_IGNORE; }

// The collective watchdog's point-to-point probe: is a message with `tag` waiting from any rank? `*source` is its
// sender, or -1 when none is (MPI_Status's fields stay on this side).
static inline int scm_iprobe_any_source(int tag, MPI_Comm comm, int *source) {
    int flag = 0;
    MPI_Status status;
    int rc = MPI_Iprobe(MPI_ANY_SOURCE, tag, comm, &flag, &status);
    *source = (rc == MPI_SUCCESS && flag) ? status.MPI_SOURCE : -1;
    return rc;
}

// Shared-memory windows (the gradient sums of ranks on one node). `node` receives the communicator of the ranks that
// share memory with this one; the window gives each rank `bytes` of its own (alloc_shared_noncontig: each segment on
// pages of its own, first touched by its owner), and `base` this rank's segment.
static inline int scm_split_shared(MPI_Comm comm, MPI_Comm *node) {
    return MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, node);
}
static inline int scm_win_allocate_shared(size_t bytes, MPI_Comm comm, float **base, MPI_Win *win) {
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    int rc = MPI_Win_allocate_shared((MPI_Aint)bytes, (int)sizeof(float), info, comm, base, win);
    MPI_Info_free(&info);
    return rc;
}
static inline int scm_win_shared_query(MPI_Win win, int rank, float **base) {
    MPI_Aint size = 0;
    int unit = 0;
    return MPI_Win_shared_query(win, rank, &size, &unit, base);
}
static inline int scm_win_lock_all(MPI_Win win) { return MPI_Win_lock_all(MPI_MODE_NOCHECK, win); }
static inline MPI_Comm scm_comm_null(void) { return MPI_COMM_NULL; }
#endif
