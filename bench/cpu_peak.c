/* Measured FP32 peak of this machine, for bench/_common.measured_peak().
 *
 * One thread per core, all at once (the all-core clock is what training runs at):
 *   - clock: a chain of dependent integer adds retires one add per cycle, so adds/second
 *     is the clock frequency the core actually runs at (boost included);
 *   - FMA throughput: 12 independent chains of vector FMAs (enough to cover the FMA latency
 *     on two FMA pipes), 8 lanes with AVX2, 16 with AVX-512.
 *
 * Build: cc -O2 -pthread -mavx2 -mfma [-mavx512f -DUSE_AVX512] cpu_peak.c -o cpu_peak
 * Run:   cpu_peak THREADS    ->  one line of JSON: {"threads":2,"ghz":[...],"gflops":...}
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef USE_AVX512
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define STORE _mm512_storeu_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define STORE _mm256_storeu_ps
#endif
#define CHAINS 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    long iters;
    double ghz, gflops, sink;
} job;

static pthread_barrier_t barrier;

static void *run(void *arg) {
    job *j = (job *)arg;
    long n = j->iters, x = 0;
    vec acc[CHAINS], b = SET1(0.999999f), c = SET1(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);

    pthread_barrier_wait(&barrier);
    double t = now();
    for (long k = 0; k < n; k++) {
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    }
    j->ghz = 4.0 * n / (now() - t) / 1e9;

    pthread_barrier_wait(&barrier);
    t = now();
    for (long k = 0; k < n / 4; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
    }
    j->gflops = (n / 4) * (double)CHAINS * LANES * 2 / (now() - t) / 1e9;

    vec s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
    float out[LANES];
    STORE(out, s);
    j->sink = out[0] + (double)x;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = argc > 2 ? atol(argv[2]) : 400000000L;
    if (threads < 1 || threads > 1024 || iters < 1000) {
        fprintf(stderr, "usage: cpu_peak THREADS [ITERATIONS>=1000]\n");
        return 2;
    }
    pthread_t *tid = malloc(sizeof(pthread_t) * threads);
    job *jobs = calloc(threads, sizeof(job));
    pthread_barrier_init(&barrier, NULL, threads);
    for (int i = 0; i < threads; i++) {
        jobs[i].iters = iters;
        pthread_create(&tid[i], NULL, run, &jobs[i]);
    }
    double total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += jobs[i].gflops;
    }
    printf("{\"threads\": %d, \"lanes\": %d, \"ghz\": [", threads, LANES);
    for (int i = 0; i < threads; i++) printf("%s%.4f", i ? ", " : "", jobs[i].ghz);
    printf("], \"gflops\": %.2f, \"sink\": %g}\n", total, jobs[0].sink > 0 ? 1.0 : 0.0);
    return 0;
}
