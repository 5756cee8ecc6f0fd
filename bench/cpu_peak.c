/* Measured arithmetic peak of this machine, for bench/_common.measure_cpu().
 *
 * One thread per core, all at once (the all-core, vector-unit clock is what training runs
 * at).  Each thread runs CHAINS independent chains of vector multiply-adds, enough to cover
 * the instruction latency on two pipes, and counts FLOPs per second:
 *   - FP32: vfmadd (FMA), 8 lanes with AVX2, 16 with AVX-512; 2 FLOPs per lane;
 *   - BF16 (built with -DUSE_BF16, where the compiler has -mavx512bf16): vdpbf16ps, 16 FP32
 *     lanes each accumulating 2 bf16 products; 4 FLOPs per lane.
 * FLOPs are counted per second of the thread's CPU time.
 * The throughput itself is the peak: no clock or FMA-unit count is assumed (a dependent
 * add chain does not measure the clock on cores that eliminate or fuse such adds: it read
 * 12.8 GHz on a Sapphire Rapids Xeon).
 *
 * Build: cc -O2 -pthread -mavx2 -mfma [-mavx512f -DUSE_AVX512 [-mavx512bf16 -DUSE_BF16]]
 *        cpu_peak.c -o cpu_peak
 * Run:   cpu_peak THREADS [ITERATIONS] [bf16]
 *   -> one line of JSON: {"threads":2,"lanes":16,"gflops":...,"bf16_gflops":... or null}
 *   (bf16 runs only when asked: the caller checks /proc/cpuinfo for avx512_bf16).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* This thread's CPU time, not wall time: other processes time-slicing the core (a shared
 * machine) do not lower the figure; what the core does while it runs this thread does. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    long iters;
    int bf16;
    double gflops, bf16_gflops, sink;
} job;

static pthread_barrier_t barrier;

static double fp32_fma(long n, double *sink) {
    vec acc[CHAINS], b = SET1(0.999999f), c = SET1(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
    double t = now();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
    }
    double seconds = now() - t;
    vec s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
    float out[LANES];
    STORE(out, s);
    *sink += out[0];
    return n * (double)CHAINS * LANES * 2 / seconds / 1e9;
}

#ifdef USE_BF16
static double bf16_dot(long n, double *sink) {
    __m512 acc[CHAINS];
    /* bf16 pairs: 1.0 (0x3f80) times ~1e-7 (0x33d7), so the sums stay small and normal */
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);
    __m512bh b = (__m512bh)_mm512_set1_epi32(0x33d733d7);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    double t = now();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    double seconds = now() - t;
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    float out[16];
    _mm512_storeu_ps(out, s);
    *sink += out[0];
    return n * (double)CHAINS * 16 * 4 / seconds / 1e9;
}
#endif

static void *run(void *arg) {
    job *j = (job *)arg;
    pthread_barrier_wait(&barrier);
    j->gflops = fp32_fma(j->iters, &j->sink);
#ifdef USE_BF16
    if (j->bf16) {
        pthread_barrier_wait(&barrier);
        j->bf16_gflops = bf16_dot(j->iters, &j->sink);
    }
#endif
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long iters = argc > 2 ? atol(argv[2]) : 100000000L;
    int bf16 = argc > 3 && strcmp(argv[3], "bf16") == 0;
    if (threads < 1 || threads > 1024 || iters < 1000 || (argc > 3 && !bf16)) {
        fprintf(stderr, "usage: cpu_peak THREADS [ITERATIONS>=1000] [bf16]\n");
        return 2;
    }
#ifndef USE_BF16
    if (bf16) {
        fprintf(stderr, "cpu_peak: built without -DUSE_BF16\n");
        return 2;
    }
#endif
    pthread_t *tid = malloc(sizeof(pthread_t) * threads);
    job *jobs = calloc(threads, sizeof(job));
    pthread_barrier_init(&barrier, NULL, threads);
    for (int i = 0; i < threads; i++) {
        jobs[i].iters = iters;
        jobs[i].bf16 = bf16;
        pthread_create(&tid[i], NULL, run, &jobs[i]);
    }
    double total = 0, total_bf16 = 0, sink = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += jobs[i].gflops;
        total_bf16 += jobs[i].bf16_gflops;
        sink += jobs[i].sink;
    }
    printf("{\"threads\": %d, \"lanes\": %d, \"gflops\": %.2f, ", threads, LANES, total);
    if (bf16)
        printf("\"bf16_gflops\": %.2f, ", total_bf16);
    else
        printf("\"bf16_gflops\": null, ");
    printf("\"sink\": %g}\n", sink > 0 ? 1.0 : 0.0);
    return 0;
}
