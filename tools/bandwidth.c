/* Read bandwidth of this machine: sum a 2 GiB buffer of 64-bit words with OpenMP threads (OMP_NUM_THREADS),
   best of 8 passes, printed in GB/s. Compiled and run by `python -m tools.bench_peers`: the
   memory-bandwidth limit of decode is this number divided by the bytes a decoded token reads. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t words = ((size_t)2 << 30) / sizeof(uint64_t);
    uint64_t *buffer = malloc(words * sizeof(uint64_t));
    if (!buffer) {
        fprintf(stderr, "cannot allocate 2 GiB\n");
        return 1;
    }
#pragma omp parallel for
    for (size_t i = 0; i < words; i++) buffer[i] = i;
    double best = 0;
    uint64_t checksum = 0;
    for (int pass = 0; pass < 8; pass++) {
        double start = omp_get_wtime();
        uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum)
        for (size_t i = 0; i < words; i++) sum += buffer[i];
        double seconds = omp_get_wtime() - start;
        double gb_per_s = words * sizeof(uint64_t) / seconds / 1e9;
        if (gb_per_s > best) best = gb_per_s;
        checksum += sum; /* keeps the loop from being optimised away */
    }
    printf("%.2f %llu\n", best, (unsigned long long)(checksum & 1));
    free(buffer);
    return 0;
}
