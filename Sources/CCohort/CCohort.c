#define _GNU_SOURCE
#include <sched.h>
// The wrappers live in include/CCohort.h; this file gives SwiftPM a source to compile.
#include "CCohort.h"
#include <string.h>
#include <stdlib.h>
#include <stdint.h>

static inline uint16_t cohort_bf16_of(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) return (uint16_t)((bits >> 16) | 0x0040u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float cohort_float_of(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

void cohort_float_to_bf16(const float *restrict x, uint16_t *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = cohort_bf16_of(x[i]);
}

void cohort_bf16_to_float(const uint16_t *restrict x, float *restrict y, long n) {
    for (long i = 0; i < n; i++) y[i] = cohort_float_of(x[i]);
}

static void cohort_bf16_sum_function(void *in, void *inout, int *length, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *length; i++) b[i] = cohort_bf16_of(cohort_float_of(a[i]) + cohort_float_of(b[i]));
}

MPI_Op cohort_mpi_bf16_sum(void) {
    static MPI_Op op = MPI_OP_NULL;
    if (op == MPI_OP_NULL) MPI_Op_create(cohort_bf16_sum_function, 1, &op);
    return op;
}

int cohort_bound_cores(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int count = CPU_COUNT(&set);
    return count > 0 ? count : 1;
}

int cohort_allreduce_bf16(float *data, long count, MPI_Comm comm) {
    int size = 1, rank = 0;
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    if (size < 2 || count <= 0) return MPI_SUCCESS;
    // A ring: n − 1 steps of reduce-scatter (block b's partial sum travels rank to rank, each
    // adding its own in float32 and rounding to bfloat16), then n − 1 steps of all-gather of
    // the finished blocks. Each link carries 2(n − 1)/n of the bfloat16 buffer.
    long block = (count + size - 1) / size;
    uint16_t *packed = calloc((size_t)(block * (size + 1)), sizeof(uint16_t));
    if (packed == NULL) return MPI_ERR_NO_MEM;
    uint16_t *incoming = packed + block * size;
    cohort_float_to_bf16(data, packed, count);
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    int status = MPI_SUCCESS;
    for (int step = 0; step < size - 1 && status == MPI_SUCCESS; step++) {
        int send = (rank - step + size) % size, receive = (rank - step - 1 + 2 * size) % size;
        status = MPI_Sendrecv(packed + send * block, (int)block, MPI_UINT16_T, right, 0x4246,
                              incoming, (int)block, MPI_UINT16_T, left, 0x4246, comm, MPI_STATUS_IGNORE);
        uint16_t *target = packed + receive * block;
        for (long i = 0; i < block; i++) target[i] = cohort_bf16_of(cohort_float_of(target[i]) + cohort_float_of(incoming[i]));
    }
    for (int step = 0; step < size - 1 && status == MPI_SUCCESS; step++) {
        int send = (rank + 1 - step + size) % size, receive = (rank - step + size) % size;
        status = MPI_Sendrecv(packed + send * block, (int)block, MPI_UINT16_T, right, 0x4247,
                              packed + receive * block, (int)block, MPI_UINT16_T, left, 0x4247, comm, MPI_STATUS_IGNORE);
    }
    if (status == MPI_SUCCESS) cohort_bf16_to_float(packed, data, count);
    free(packed);
    return status;
}
