// CUDA C: norm-guided combine (spec steps 2-5) written straight into the segmentation input.
//
// Reads x, the U-Net output eps = [eps_s; eps_l] and the fixed noise (x_s and x_l are
// recomputed: the noise is shared by the batch and cached, cheaper than reading them back),
// writes seg_in = cat(x, x0_ng) (B, 2C, S, S). copy_x = 0 when x already is seg_in[:, :C].
// Bytes per element: 12 read + 8 written (4 without the copy of x).
// Same operation as combine_triton.py; reference: combine_ref.py.
// Launch: grid (ceil(C*S*S / 256), B), block 256.

extern "C" __global__ void combine(
    const float *__restrict__ x,      // (C, S, S) per sample, x_batch_stride floats apart
    long long x_batch_stride,
    const float *__restrict__ eps,    // (2B, C, S, S)
    const float *__restrict__ noise,  // (2, C, S, S)
    float *out,                       // (B, 2C, S, S); may hold x in its first C channels
    int B, int n,                     // n = C * S * S
    float sa_s, float sb_s, float sa_l, float sb_l, float sbw,  // sbw = sqrt(1 - abar_s) * w
    int copy_x) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long b = blockIdx.y;
    const float xv = x[b * x_batch_stride + i];
    const float es = eps[b * n + i], el = eps[(B + b) * n + i];
    const float x_s = sa_s * xv + sb_s * noise[i];
    const float x_l = sa_l * xv + sb_l * noise[n + i];
    const float x0_l = fminf(fmaxf((x_l - sb_l * el) / sa_l, -1.0f), 1.0f);  // (2)
    const float guide = sa_s * x0_l + sb_s * es;                              // (3)
    const float eps_g = es - sbw * (guide - x_s);                             // (4)
    out[b * 2 * n + n + i] = fminf(fmaxf((x_s - sb_s * eps_g) / sa_s, -1.0f), 1.0f);  // (5)
    if (copy_x) out[b * 2 * n + i] = xv;
}
