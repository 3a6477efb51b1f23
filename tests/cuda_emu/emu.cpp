// The kernels of kernels/*.cu compiled for the CPU (see cuda_emu.h); built by the tests.
#include "cuda_emu.h"

#include "preprocess_noise.cu"
#include "combine.cu"
#include "score.cu"

// 0 on success, -1 for an unknown kernel name.
extern "C" int emu_launch_kernel(const char *name, unsigned gx, unsigned gy, unsigned threads, void **params) {
    if (!std::strcmp(name, "preprocess_noise")) emu_run(preprocess_noise, gx, gy, threads, params, false);
    else if (!std::strcmp(name, "combine")) emu_run(combine, gx, gy, threads, params, false);
    else if (!std::strcmp(name, "smooth_rows")) emu_run(smooth_rows, gx, gy, threads, params, false);
    else if (!std::strcmp(name, "smooth_cols")) emu_run(smooth_cols, gx, gy, threads, params, false);
    else if (!std::strcmp(name, "topk_score")) emu_run(topk_score, gx, gy, threads, params, true);
    else return -1;
    return 0;
}
