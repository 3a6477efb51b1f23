// CUDA C: smoothing, top-k mean score, normalised score and pixel mask of anomaly maps.
//
// smooth_rows / smooth_cols: the separable Gaussian with edge replication, taps summed in
// order (grid (ceil(H*W / 256), B), block 256). topk_score: one block of 256 threads per map;
// radix select of the k-th largest value over a monotonic int key of the float bits, four
// 8-bit digits, each a shared-memory histogram (no sort); then one pass sums the values
// above it, adds the ties that make up k, and writes the mask (grid (B), block 256).
// Bytes per pixel: blur 2 x (4 + 4); select 5 x 4 read (L2 after the first) + 1 written.
// Same operations as score_triton.py; reference: score_ref.py.

#define THREADS 256

extern "C" __global__ void smooth_rows(const float *__restrict__ src, float *__restrict__ dst,
                                       const float *__restrict__ taps, int H, int W, int R) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * W) return;
    const long long row = (long long)blockIdx.y * H * W + (i - i % W);
    const int x = i % W;
    float acc = 0.0f;
    for (int j = 0; j <= 2 * R; j++) {
        const int xx = min(max(x + j - R, 0), W - 1);
        acc += taps[j] * src[row + xx];
    }
    dst[row + x] = acc;
}

extern "C" __global__ void smooth_cols(const float *__restrict__ src, float *__restrict__ dst,
                                       const float *__restrict__ taps, int H, int W, int R) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * W) return;
    const long long base = (long long)blockIdx.y * H * W;
    const int y = i / W, x = i % W;
    float acc = 0.0f;
    for (int j = 0; j <= 2 * R; j++) {
        const int yy = min(max(y + j - R, 0), H - 1);
        acc += taps[j] * src[base + (long long)yy * W + x];
    }
    dst[base + i] = acc;
}

// Float -> int with the same order; its own inverse.
__device__ __forceinline__ int order_key(float v) {
    const int bits = __float_as_int(v);
    return bits ^ ((bits >> 31) & 0x7fffffff);
}

extern "C" __global__ void topk_score(
    const float *__restrict__ maps,  // (B, N)
    int N, int k,
    unsigned char *__restrict__ masks,  // (B, N): map >= pixel_thr; null: no mask
    float pixel_thr,
    int has_image, float t, float half_inv_t, float half_inv_1mt,  // clamped image threshold, 0.5/t, 0.5/(1-t)
    float *__restrict__ scores, float *__restrict__ normalized) {
    __shared__ unsigned int hist[256];
    __shared__ int s_hi, s_krem;
    __shared__ float partial[THREADS];
    const float *m = maps + (long long)blockIdx.x * N;
    const int tid = threadIdx.x;
    int hi = 0, krem = k;  // key >> (shift + 8) of the k-th largest so far; values still needed there
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = tid; d < 256; d += THREADS) hist[d] = 0;
        __syncthreads();
        for (int i = tid; i < N; i += THREADS) {
            const int key = order_key(m[i]);
            if (shift == 24) {
                atomicAdd(&hist[((key >> 24) & 255) ^ 128], 1u);  // sign byte in unsigned order
            } else if ((key >> (shift + 8)) == hi) {
                atomicAdd(&hist[(key >> shift) & 255], 1u);
            }
        }
        __syncthreads();
        if (tid == 0) {
            int above = 0, d = 255;
            for (; d > 0 && above + (int)hist[d] < krem; d--) above += hist[d];
            s_hi = shift == 24 ? d - 128 : hi * 256 + d;
            s_krem = krem - above;
        }
        __syncthreads();
        hi = s_hi;
        krem = s_krem;
    }
    const int kth_bits = hi ^ ((hi >> 31) & 0x7fffffff);
    const float kth = __int_as_float(kth_bits);
    float acc = 0.0f;
    for (int i = tid; i < N; i += THREADS) {
        const float v = m[i];
        if (order_key(v) > hi) acc += v;
        if (masks != nullptr) masks[(long long)blockIdx.x * N + i] = v >= pixel_thr;
    }
    partial[tid] = acc;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (tid < s) partial[tid] += partial[tid + s];
        __syncthreads();
    }
    if (tid == 0) {
        const float score = (partial[0] + (float)krem * kth) / (float)k;
        scores[blockIdx.x] = score;
        normalized[blockIdx.x] = !has_image ? score
                                 : (score < t ? score * half_inv_t : 0.5f + (score - t) * half_inv_1mt);
    }
}
