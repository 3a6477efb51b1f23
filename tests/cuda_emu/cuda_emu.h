// Run the CUDA C kernels of kernels/*.cu on the CPU, for tests on machines without a GPU.
//
// Each CUDA thread is an OS thread (or, for kernels without __syncthreads, a loop
// iteration); blocks run one after another, so __shared__ can be a static. Launches go
// through emu_launch_kernel(name, grid, block, params) with cuLaunchKernel's argument
// convention (an array of pointers to the argument values), so the launch code of
// kernels/cuda_loader.py is exercised as well. Float semantics: IEEE float32 without FMA.
#pragma once
#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
static dim3 blockIdx, blockDim, gridDim;
static thread_local dim3 threadIdx;
static pthread_barrier_t emu_barrier;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

static inline void __syncthreads() { pthread_barrier_wait(&emu_barrier); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}
static inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
using std::max;
using std::min;

// Call kernel(*(A0 *)params[0], *(A1 *)params[1], ...).
template <typename... A, size_t... I>
static void emu_call(void (*kernel)(A...), void **params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A> *>(params[I])...);
}

template <typename... A>
static void emu_run(void (*kernel)(A...), unsigned gx, unsigned gy, unsigned threads, void **params, bool sync) {
    gridDim.x = gx;
    gridDim.y = gy;
    blockDim.x = threads;
    for (unsigned by = 0; by < gy; by++) {
        for (unsigned bx = 0; bx < gx; bx++) {
            blockIdx.x = bx;
            blockIdx.y = by;
            if (!sync) {  // no barrier in the kernel: the threads of a block may run in turn
                for (unsigned t = 0; t < threads; t++) {
                    threadIdx.x = t;
                    emu_call(kernel, params, std::index_sequence_for<A...>{});
                }
                continue;
            }
            pthread_barrier_init(&emu_barrier, nullptr, threads);
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; t++) {
                pool.emplace_back([=] {
                    threadIdx.x = t;
                    emu_call(kernel, params, std::index_sequence_for<A...>{});
                });
            }
            for (auto &th : pool) th.join();
            pthread_barrier_destroy(&emu_barrier);
        }
    }
}
