/* dad_edge._C: CPU forms of the fused stages for the ONNX Runtime / CPU path.
 *
 * Plain CPython C API and the buffer protocol (no numpy headers, no torch, no OpenMP).
 * Each function matches its reference in kernels/<op>_ref.py: float32 arithmetic in the
 * reference's order (built with -ffp-contract=off: no FMA), float64 where the reference
 * uses float64. The GIL is released while the loops run.
 *
 *   preprocess(frames, x_out, unet_out, noise, size, bgr, scale, offset, coefs=None)
 *       preprocess_noise_ref / preprocess_ref: each frame read once, x, x_s (and x_l when
 *       unet_out holds 2B samples; single-pass models take x_s alone) written once.
 *   combine(x, eps, noise, out, coefs, w, copy_x=True)     combine_ref: steps 2-5 into cat(x, x0_ng)
 *   smooth(maps, out, taps)                                score_ref.smooth_ref
 *   topk_score(maps, k, image_thr, pixel_thr, scores, normalized, masks)
 *       score_ref: top-k mean by a k-element min-heap (no sort), normalised score, mask.
 *   num_threads(), set_num_threads(n)
 *
 * Threads: a small pthread pool (DAD_EDGE_NUM_THREADS, default: the online cores). Work is
 * cut into chunks claimed from an atomic counter; the calling thread works too and waits
 * only for chunks another thread has claimed, so a worker the OS has not scheduled (a
 * machine shared with other jobs) never holds a call up, unlike a fork-join barrier.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <pthread.h>
#include <unistd.h>
#define DAD_POOL 1
#else
#define DAD_POOL 0 /* Windows: single-threaded */
#endif

/* ================================================================= thread pool */

typedef void (*RangeFn)(void *ctx, Py_ssize_t begin, Py_ssize_t end);

static int n_threads = 0; /* 0: not yet chosen */

static int default_threads(void) {
    const char *env = getenv("DAD_EDGE_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
#if DAD_POOL
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n < 64 ? n : 64) : 1;
#else
    return 1;
#endif
}

#if DAD_POOL
static struct {
    pthread_mutex_t mu, submit;   /* submit: one job at a time */
    pthread_cond_t wake, idle;
    int spawned;                  /* worker threads started */
    int open;                     /* a job is open for workers to join */
    unsigned long gen;            /* job number */
    int active, max_active;       /* workers inside the open job, and how many may join */
    RangeFn fn;
    void *ctx;
    Py_ssize_t n, grain;
    Py_ssize_t next, done;        /* atomics: next unclaimed item, items finished */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, 0, 0, 0, 0, NULL, NULL, 0, 0, 0, 0};

static void run_chunks(RangeFn fn, void *ctx, Py_ssize_t n, Py_ssize_t grain) {
    for (;;) {
        const Py_ssize_t b = __atomic_fetch_add(&pool.next, grain, __ATOMIC_RELAXED);
        if (b >= n) return;
        const Py_ssize_t e = b + grain < n ? b + grain : n;
        fn(ctx, b, e);
        if (__atomic_add_fetch(&pool.done, e - b, __ATOMIC_ACQ_REL) == n) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_broadcast(&pool.idle);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}

static void *worker(void *unused) {
    unsigned long seen = 0;
    (void)unused;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!(pool.open && pool.gen != seen && pool.active < pool.max_active))
            pthread_cond_wait(&pool.wake, &pool.mu);
        seen = pool.gen;
        pool.active++;
        RangeFn fn = pool.fn;
        void *ctx = pool.ctx;
        const Py_ssize_t n = pool.n, grain = pool.grain;
        pthread_mutex_unlock(&pool.mu);
        run_chunks(fn, ctx, n, grain);
        pthread_mutex_lock(&pool.mu);
        if (--pool.active == 0) pthread_cond_broadcast(&pool.idle);
    }
    return NULL;
}
#endif

/* fn(ctx, begin, end) over [0, n) in chunks of `grain` items, on up to n_threads threads. */
static void parallel_for(RangeFn fn, void *ctx, Py_ssize_t n, Py_ssize_t grain) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
#if DAD_POOL
    const int workers = n_threads - 1;
    if (workers > 0 && n > grain) {
        pthread_mutex_lock(&pool.submit);
        pthread_mutex_lock(&pool.mu);
        while (pool.spawned < workers) {
            pthread_t t;
            if (pthread_create(&t, NULL, worker, NULL) != 0) break;
            pthread_detach(t);
            pool.spawned++;
        }
        pool.fn = fn;
        pool.ctx = ctx;
        pool.n = n;
        pool.grain = grain;
        pool.next = 0;
        pool.done = 0;
        pool.max_active = workers;
        pool.open = 1;
        pool.gen++;
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
        run_chunks(fn, ctx, n, grain);
        pthread_mutex_lock(&pool.mu);
        while (__atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < n) pthread_cond_wait(&pool.idle, &pool.mu);
        pool.open = 0; /* late workers do not join; the ones inside are about to leave */
        while (pool.active > 0) pthread_cond_wait(&pool.idle, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
        pthread_mutex_unlock(&pool.submit);
        return;
    }
#endif
    fn(ctx, 0, n);
}

/* ================================================================= buffer helpers */

/* A float32/uint8 buffer with its shape; strides in elements. */
typedef struct {
    Py_buffer view;
    int held;
    int ndim;
    Py_ssize_t shape[4];
    Py_ssize_t strides[4];
} Buf;

static void buf_release(Buf *b) {
    if (b->held) PyBuffer_Release(&b->view);
    b->held = 0;
}

/* Get `obj` as a buffer of `ndim` dims with item format `fmt` ("f" or "B"). Only the
 * innermost `contig_dims` dims must be C-contiguous; outer strides may be anything. */
static int buf_get(PyObject *obj, Buf *b, const char *name, int ndim, char fmt, int writable, int contig_dims) {
    const int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    const Py_ssize_t itemsize = fmt == 'f' ? 4 : 1;
    memset(b, 0, sizeof(*b));
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    if (f[0] != fmt || f[1] != 0 || b->view.itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected %s, got format '%s'", name, fmt == 'f' ? "float32" : "uint8",
                     b->view.format ? b->view.format : "B");
        goto fail;
    }
    if (b->view.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimensions, got %d", name, ndim, b->view.ndim);
        goto fail;
    }
    b->ndim = ndim;
    Py_ssize_t expect = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        b->shape[d] = b->view.shape[d];
        if (b->view.strides[d] % itemsize) {
            PyErr_Format(PyExc_ValueError, "%s: unaligned stride", name);
            goto fail;
        }
        b->strides[d] = b->view.strides[d] / itemsize;
        if (d >= ndim - contig_dims && b->shape[d] > 1 && b->strides[d] != expect) {
            PyErr_Format(PyExc_ValueError, "%s: the last %d dimensions must be C-contiguous", name, contig_dims);
            goto fail;
        }
        expect *= b->shape[d];
    }
    return 0;
fail:
    buf_release(b);
    return -1;
}

/* Check dims against `want` (-1: any). */
static int check_shape(const Buf *b, const char *name, const Py_ssize_t *want) {
    for (int d = 0; d < b->ndim; d++) {
        if (want[d] >= 0 && b->shape[d] != want[d]) {
            PyErr_Format(PyExc_ValueError, "%s: dimension %d is %zd, expected %zd", name, d, b->shape[d], want[d]);
            return -1;
        }
    }
    return 0;
}
#define SHAPE(...) ((const Py_ssize_t[]){__VA_ARGS__})

/* ================================================================= preprocess + noise */

/* Bilinear taps along one axis, in float64 exactly as preprocess.bilinear_taps. */
static void taps(int src, int dst, int *i0, int *i1, float *w1) {
    const double ratio = (double)src / (double)dst;
    for (int o = 0; o < dst; o++) {
        double pos = ((double)o + 0.5) * ratio - 0.5;
        if (pos < 0.0) pos = 0.0;
        if (pos > (double)(src - 1)) pos = (double)(src - 1);
        const int a = (int)floor(pos);
        i0[o] = a;
        i1[o] = a + 1 < src ? a + 1 : src - 1;
        w1[o] = (float)(pos - (double)a);
    }
}

/* Bilinear blend of four taps, in the reference's float32 order (resize_bilinear). */
static inline float blend(float v00, float v01, float v10, float v11, float wx, float wy) {
    const float top = v00 * (1 - wx) + v01 * wx;
    const float bot = v10 * (1 - wx) + v11 * wx;
    return top * (1 - wy) + bot * wy;
}

/* BT.601 gray of an RGB pixel, in to_channels' order. */
static inline float gray(const uint8_t *p, int ir, int ib) {
    return (0.299f * (float)p[ir] + 0.587f * (float)p[1]) + 0.114f * (float)p[ib];
}

/* One output row of every model channel: out_c[x] = blend(...) * scale + offset.
 * Specialised per layout, so the inner loops carry no per-pixel branches. */
static void resize_row(const uint8_t *r0, const uint8_t *r1, int cin, int channels, int bgr, float wy,
                       const int *x0, const int *x1, const float *wxs, int size, float fs, float fo, float *out0,
                       float *out1, float *out2) {
    const int ir = bgr ? 2 : 0, ib = bgr ? 0 : 2;
    if (cin == 1) {
        for (int x = 0; x < size; x++) {
            const int a = x0[x], e = x1[x];
            out0[x] = blend(r0[a], r0[e], r1[a], r1[e], wxs[x], wy) * fs + fo;
        }
        if (channels == 3) {
            memcpy(out1, out0, sizeof(float) * size);
            memcpy(out2, out0, sizeof(float) * size);
        }
    } else if (channels == 1) {
        for (int x = 0; x < size; x++) {
            const int a = x0[x] * cin, e = x1[x] * cin;
            out0[x] = blend(gray(r0 + a, ir, ib), gray(r0 + e, ir, ib), gray(r1 + a, ir, ib), gray(r1 + e, ir, ib),
                            wxs[x], wy) * fs + fo;
        }
    } else {
        for (int x = 0; x < size; x++) {
            const int a = x0[x] * cin, e = x1[x] * cin;
            const float wx = wxs[x];
            out0[x] = blend(r0[a + ir], r0[e + ir], r1[a + ir], r1[e + ir], wx, wy) * fs + fo;
            out1[x] = blend(r0[a + 1], r0[e + 1], r1[a + 1], r1[e + 1], wx, wy) * fs + fo;
            out2[x] = blend(r0[a + ib], r0[e + ib], r1[a + ib], r1[e + ib], wx, wy) * fs + fo;
        }
    }
}

typedef struct {
    const uint8_t *data;
    int h, w, cin;
    int *ti;   /* y0[S], y1[S], x0[S], x1[S] */
    float *tw; /* wy[S], wx[S] */
} Frame;

typedef struct {
    const Frame *frames;
    Py_ssize_t nb;
    int size, channels, bgr, with_large;
    float scale, offset, sa_s, sb_s, sa_l, sb_l;
    float *x;               /* (B, C, S, S), samples x_bs floats apart */
    Py_ssize_t x_bs;
    float *unet;            /* (2B or B, C, S, S) or NULL */
    const float *noise;     /* (2, C, S, S) */
} PreprocessJob;

/* Rows [begin, end) of the flattened (B, S) output rows. */
static void preprocess_rows(void *ctx, Py_ssize_t begin, Py_ssize_t end) {
    const PreprocessJob *j = ctx;
    const int size = j->size, channels = j->channels;
    const float sa_s = j->sa_s, sb_s = j->sb_s, sa_l = j->sa_l, sb_l = j->sb_l; /* locals: see combine_range */
    const Py_ssize_t plane = (Py_ssize_t)size * size;
    for (Py_ssize_t row = begin; row < end; row++) {
        const Py_ssize_t b = row / size;
        const int y = (int)(row % size);
        const Frame *f = &j->frames[b];
        const uint8_t *r0 = f->data + (size_t)f->ti[y] * f->w * f->cin;
        const uint8_t *r1 = f->data + (size_t)f->ti[size + y] * f->w * f->cin;
        float *xr = j->x + b * j->x_bs + (Py_ssize_t)y * size;
        resize_row(r0, r1, f->cin, channels, j->bgr, f->tw[y], f->ti + 2 * size, f->ti + 3 * size, f->tw + size, size,
                   j->scale, j->offset, xr, channels == 3 ? xr + plane : NULL, channels == 3 ? xr + 2 * plane : NULL);
        if (!j->unet) continue;
        for (int c = 0; c < channels; c++) {
            const Py_ssize_t o = c * plane + (Py_ssize_t)y * size;
            const float *xc = xr + c * plane, *n1 = j->noise + o, *n2 = j->noise + channels * plane + o;
            float *xs = j->unet + b * channels * plane + o;
            for (int x = 0; x < size; x++) xs[x] = sa_s * xc[x] + sb_s * n1[x];
            if (j->with_large) {
                float *xl = j->unet + (j->nb + b) * channels * plane + o;
                for (int x = 0; x < size; x++) xl[x] = sa_l * xc[x] + sb_l * n2[x];
            }
        }
    }
}

static PyObject *py_preprocess(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"frames", "x_out", "unet_out", "noise", "size", "bgr", "scale", "offset", "coefs", NULL};
    PyObject *frames_obj, *x_obj, *unet_obj, *noise_obj, *coefs_obj = Py_None;
    int size, bgr;
    double scale, offset, co[4] = {0, 0, 0, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOipdd|O", names, &frames_obj, &x_obj, &unet_obj, &noise_obj, &size,
                                     &bgr, &scale, &offset, &coefs_obj))
        return NULL;
    PyObject *seq = PySequence_Fast(frames_obj, "frames must be a sequence of (H, W, C) uint8 arrays");
    if (!seq) return NULL;
    const Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    const int with_noise = unet_obj != Py_None;
    Buf *fb = calloc(nb + 1, sizeof(Buf)), xb = {0}, ub = {0}, nbuf = {0};
    Frame *fr = calloc(nb + 1, sizeof(Frame));
    int *tab_i = NULL;
    float *tab_w = NULL;
    PyObject *result = NULL;
    PreprocessJob job;
    if (!fb || !fr) {
        PyErr_NoMemory();
        goto done;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        goto done;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        if (buf_get(PySequence_Fast_GET_ITEM(seq, i), &fb[i], "frame", 3, 'B', 0, 3) < 0) goto done;
        fr[i].data = fb[i].view.buf;
        fr[i].h = (int)fb[i].shape[0];
        fr[i].w = (int)fb[i].shape[1];
        fr[i].cin = (int)fb[i].shape[2];
        if (fr[i].h <= 0 || fr[i].w <= 0 || (fr[i].cin != 1 && fr[i].cin != 3 && fr[i].cin != 4)) {
            PyErr_Format(PyExc_ValueError, "frame %zd: expected (H, W, 1|3|4) with H, W > 0", i);
            goto done;
        }
    }
    if (buf_get(x_obj, &xb, "x_out", 4, 'f', 1, 3) < 0) goto done;
    const int channels = (int)xb.shape[1];
    if (channels != 1 && channels != 3) {
        PyErr_SetString(PyExc_ValueError, "x_out: channels must be 1 or 3");
        goto done;
    }
    if (check_shape(&xb, "x_out", SHAPE(nb, -1, size, size)) < 0) goto done;
    int with_large = 0;
    if (with_noise) {
        if (buf_get(unet_obj, &ub, "unet_out", 4, 'f', 1, 4) < 0) goto done;
        /* (2B, ...) = [x_s; x_l] for two-pass models, (B, ...) = x_s alone for single-pass ones. */
        with_large = ub.shape[0] != nb;
        if (check_shape(&ub, "unet_out", SHAPE((with_large ? 2 : 1) * nb, channels, size, size)) < 0) goto done;
        if (buf_get(noise_obj, &nbuf, "noise", 4, 'f', 0, 4) < 0) goto done;
        if (check_shape(&nbuf, "noise", SHAPE(2, channels, size, size)) < 0) goto done;
        if (!PyArg_ParseTuple(coefs_obj, "dddd", &co[0], &co[1], &co[2], &co[3])) goto done;
    }
    tab_i = malloc(sizeof(int) * 4 * (size_t)size * (nb + 1));
    tab_w = malloc(sizeof(float) * 2 * (size_t)size * (nb + 1));
    if (!tab_i || !tab_w) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        fr[i].ti = tab_i + 4 * (size_t)size * i;
        fr[i].tw = tab_w + 2 * (size_t)size * i;
        taps(fr[i].h, size, fr[i].ti, fr[i].ti + size, fr[i].tw);
        taps(fr[i].w, size, fr[i].ti + 2 * size, fr[i].ti + 3 * size, fr[i].tw + size);
    }
    job = (PreprocessJob){fr, nb, size, channels, bgr, with_large, (float)scale, (float)offset, (float)co[0],
                          (float)co[1], (float)co[2], (float)co[3], xb.view.buf, xb.strides[0],
                          with_noise ? ub.view.buf : NULL, with_noise ? nbuf.view.buf : NULL};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(preprocess_rows, &job, nb * size, 1 + 16384 / size);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    for (Py_ssize_t i = 0; i < nb && fb; i++) buf_release(&fb[i]);
    buf_release(&xb);
    buf_release(&ub);
    buf_release(&nbuf);
    free(fb);
    free(fr);
    free(tab_i);
    free(tab_w);
    Py_DECREF(seq);
    return result;
}

/* ================================================================= norm-guided combine */

/* np.clip(v, -1, 1), NaN passing through as in numpy; vectorises where fminf/fmaxf do not. */
static inline float clip1(float v) { return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v); }

typedef struct {
    const float *x, *eps, *noise;
    float *out;
    Py_ssize_t B, per, x_bs; /* per = C * S * S */
    float sa_s, sb_s, sa_l, sb_l, sbw;
    int copy_x;
} CombineJob;

/* Elements [begin, end) of the flattened (B, C*S*S) index space. */
static void combine_range(void *ctx, Py_ssize_t begin, Py_ssize_t end) {
    const CombineJob *j = ctx;
    /* Locals: the output stores could alias *j as far as the compiler knows, which would
     * stop it from keeping these in registers and from vectorising. */
    const Py_ssize_t per = j->per;
    const float sa_s = j->sa_s, sb_s = j->sb_s, sa_l = j->sa_l, sb_l = j->sb_l, sbw = j->sbw;
    while (begin < end) {
        const Py_ssize_t b = begin / per, i0 = begin % per;
        const Py_ssize_t i1 = (end - b * per) < per ? end - b * per : per;
        const float *xi = j->x + b * j->x_bs, *es = j->eps + b * per, *el = j->eps + (j->B + b) * per;
        const float *n1 = j->noise, *n2 = j->noise + per;
        float *ox = j->out + b * 2 * per, *og = ox + per;
        for (Py_ssize_t i = i0; i < i1; i++) {
            const float xv = xi[i];
            const float x_s = sa_s * xv + sb_s * n1[i];
            const float x_l = sa_l * xv + sb_l * n2[i];
            const float x0_l = clip1((x_l - sb_l * el[i]) / sa_l);  /* (2) */
            const float guide = sa_s * x0_l + sb_s * es[i];         /* (3) */
            const float eps_g = es[i] - sbw * (guide - x_s);        /* (4) */
            og[i] = clip1((x_s - sb_s * eps_g) / sa_s);             /* (5) */
        }
        if (j->copy_x) memcpy(ox + i0, xi + i0, sizeof(float) * (size_t)(i1 - i0));
        begin = b * per + i1;
    }
}

static PyObject *py_combine(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"x", "eps", "noise", "out", "coefs", "w", "copy_x", NULL};
    PyObject *x_obj, *eps_obj, *noise_obj, *out_obj;
    double co[4], w;
    int copy_x = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO(dddd)d|p", names, &x_obj, &eps_obj, &noise_obj, &out_obj, &co[0],
                                     &co[1], &co[2], &co[3], &w, &copy_x))
        return NULL;
    Buf xb = {0}, eb = {0}, nb = {0}, ob = {0};
    PyObject *result = NULL;
    CombineJob job;
    if (buf_get(x_obj, &xb, "x", 4, 'f', 0, 3) < 0) goto done;
    const Py_ssize_t B = xb.shape[0], C = xb.shape[1], H = xb.shape[2], W = xb.shape[3];
    if (buf_get(eps_obj, &eb, "eps", 4, 'f', 0, 4) < 0 || check_shape(&eb, "eps", SHAPE(2 * B, C, H, W)) < 0) goto done;
    if (buf_get(noise_obj, &nb, "noise", 4, 'f', 0, 4) < 0 || check_shape(&nb, "noise", SHAPE(2, C, H, W)) < 0)
        goto done;
    if (buf_get(out_obj, &ob, "out", 4, 'f', 1, 4) < 0 || check_shape(&ob, "out", SHAPE(B, 2 * C, H, W)) < 0) goto done;
    /* The reference forms sqrt(1 - abar_s) * w in float64 before it meets float32 arrays. */
    job = (CombineJob){xb.view.buf, eb.view.buf, nb.view.buf, ob.view.buf, B, C * H * W, xb.strides[0],
                       (float)co[0], (float)co[1], (float)co[2], (float)co[3], (float)(co[1] * w), copy_x};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(combine_range, &job, B * C * H * W, 32768);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    buf_release(&xb);
    buf_release(&eb);
    buf_release(&nb);
    buf_release(&ob);
    return result;
}

/* ================================================================= smoothing */

typedef struct {
    const float *src, *k;
    float *tmp, *dst;
    float *pads; /* one edge-padded row (W + 2r) per chunk of `grain` rows */
    Py_ssize_t H, W, n, r, src_bs, dst_bs, grain;
} SmoothJob;

/* Rows pass over maps rows [begin, end): tmp[y, x] = sum_j k[j] m[y, clamp(x + j - r)], taps in order. */
static void smooth_rows(void *ctx, Py_ssize_t begin, Py_ssize_t end) {
    const SmoothJob *j = ctx;
    const Py_ssize_t W = j->W, r = j->r, n = j->n;
    float *pad = j->pads + (begin / j->grain) * (W + 2 * r);
    for (Py_ssize_t row = begin; row < end; row++) {
        const float *s = j->src + (row / j->H) * j->src_bs + (row % j->H) * W;
        float *t = j->tmp + row * W;
        for (Py_ssize_t i = 0; i < W + 2 * r; i++) pad[i] = s[i < r ? 0 : (i - r >= W ? W - 1 : i - r)];
        for (Py_ssize_t x = 0; x < W; x++) t[x] = 0.0f;
        for (Py_ssize_t q = 0; q < n; q++) {
            const float kq = j->k[q];
            const float *p = pad + q;
            for (Py_ssize_t x = 0; x < W; x++) t[x] += kq * p[x];
        }
    }
}

/* Columns pass: out[y, x] = sum_j k[j] tmp[clamp(y + j - r), x], a row of x at a time. */
static void smooth_cols(void *ctx, Py_ssize_t begin, Py_ssize_t end) {
    const SmoothJob *j = ctx;
    const Py_ssize_t H = j->H, W = j->W, r = j->r, n = j->n;
    for (Py_ssize_t row = begin; row < end; row++) {
        const Py_ssize_t b = row / H, y = row % H;
        float *d = j->dst + b * j->dst_bs + y * W;
        for (Py_ssize_t x = 0; x < W; x++) d[x] = 0.0f;
        for (Py_ssize_t q = 0; q < n; q++) {
            Py_ssize_t yy = y + q - r;
            yy = yy < 0 ? 0 : (yy >= H ? H - 1 : yy);
            const float *t = j->tmp + (b * H + yy) * W;
            const float kq = j->k[q];
            for (Py_ssize_t x = 0; x < W; x++) d[x] += kq * t[x];
        }
    }
}

static PyObject *py_smooth(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"maps", "out", "taps", NULL};
    PyObject *m_obj, *o_obj, *t_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO", names, &m_obj, &o_obj, &t_obj)) return NULL;
    Buf mb = {0}, ob = {0}, tb = {0};
    PyObject *result = NULL;
    float *tmp = NULL, *pads = NULL;
    SmoothJob job;
    if (buf_get(m_obj, &mb, "maps", 3, 'f', 0, 3) < 0) goto done;
    if (buf_get(o_obj, &ob, "out", 3, 'f', 1, 3) < 0 ||
        check_shape(&ob, "out", SHAPE(mb.shape[0], mb.shape[1], mb.shape[2])) < 0)
        goto done;
    if (buf_get(t_obj, &tb, "taps", 1, 'f', 0, 1) < 0) goto done;
    if (tb.shape[0] % 2 == 0) {
        PyErr_SetString(PyExc_ValueError, "taps: need an odd count");
        goto done;
    }
    const Py_ssize_t B = mb.shape[0], H = mb.shape[1], W = mb.shape[2], r = (tb.shape[0] - 1) / 2;
    const Py_ssize_t grain = 1 + 16384 / (W + 1);
    tmp = malloc(sizeof(float) * ((size_t)(B * H * W) + 1));
    pads = malloc(sizeof(float) * ((size_t)((B * H / grain + 1) * (W + 2 * r)) + 1));
    if (!tmp || !pads) {
        PyErr_NoMemory();
        goto done;
    }
    job = (SmoothJob){mb.view.buf, tb.view.buf, tmp, ob.view.buf, pads, H, W, tb.shape[0], r,
                      mb.strides[0], ob.strides[0], grain};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(smooth_rows, &job, B * H, grain);
    parallel_for(smooth_cols, &job, B * H, grain);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(tmp);
    free(pads);
    buf_release(&mb);
    buf_release(&ob);
    buf_release(&tb);
    return result;
}

/* ================================================================= top-k score */

/* Restore the min-heap property below position i of heap[0..k). */
static inline void sift_down(float *heap, Py_ssize_t k, Py_ssize_t i) {
    const float v = heap[i];
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && heap[c + 1] < heap[c]) c++;
        if (!(heap[c] < v)) break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = v;
}

/* Sum of the k largest of m[0..n), in float64, by a k-element min-heap. */
static double topk_sum(const float *m, Py_ssize_t n, Py_ssize_t k, float *heap) {
    for (Py_ssize_t i = 0; i < k; i++) heap[i] = m[i];
    for (Py_ssize_t i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
    for (Py_ssize_t i = k; i < n; i++) {
        if (m[i] > heap[0]) { /* most values fall below the minimum: one comparison */
            heap[0] = m[i];
            sift_down(heap, k, 0);
        }
    }
    double s = 0.0;
    for (Py_ssize_t i = 0; i < k; i++) s += (double)heap[i];
    return s;
}

typedef struct {
    const float *m;
    Py_ssize_t N, k, m_bs;
    float *heaps, *scores, *norm;
    uint8_t *masks;
    int has_image;
    double t;   /* image threshold, clamped as normalize_score does */
    float pthr; /* pixel threshold in float32: the mask compares float32 values */
} TopkJob;

static void topk_maps(void *ctx, Py_ssize_t begin, Py_ssize_t end) {
    const TopkJob *j = ctx;
    for (Py_ssize_t b = begin; b < end; b++) {
        const float *mi = j->m + b * j->m_bs;
        const float s = (float)(topk_sum(mi, j->N, j->k, j->heaps + b * j->k) / (double)j->k);
        const double sd = s, t = j->t;
        j->scores[b] = s;
        j->norm[b] = j->has_image ? (float)(sd < t ? 0.5 * sd / t : 0.5 + 0.5 * (sd - t) / (1 - t)) : s;
        if (j->masks) {
            uint8_t *mk = j->masks + b * j->N;
            for (Py_ssize_t i = 0; i < j->N; i++) mk[i] = mi[i] >= j->pthr;
        }
    }
}

static PyObject *py_topk_score(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"maps", "k", "image_thr", "pixel_thr", "scores", "normalized", "masks", NULL};
    PyObject *m_obj, *it_obj, *pt_obj, *s_obj, *n_obj, *k_obj = Py_None;
    Py_ssize_t k;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OnOOOO|O", names, &m_obj, &k, &it_obj, &pt_obj, &s_obj, &n_obj,
                                     &k_obj))
        return NULL;
    Buf mb = {0}, sb = {0}, nb = {0}, kb = {0};
    PyObject *result = NULL;
    float *heaps = NULL;
    double image_thr = 0.0, pixel_thr = 0.0;
    const int has_image = it_obj != Py_None, has_pixel = pt_obj != Py_None;
    TopkJob job;
    if (has_image && (image_thr = PyFloat_AsDouble(it_obj)) == -1.0 && PyErr_Occurred()) goto done;
    if (has_pixel && (pixel_thr = PyFloat_AsDouble(pt_obj)) == -1.0 && PyErr_Occurred()) goto done;
    if (buf_get(m_obj, &mb, "maps", 2, 'f', 0, 2) < 0) goto done;
    const Py_ssize_t B = mb.shape[0], N = mb.shape[1];
    if (k < 1 || k > N) {
        PyErr_Format(PyExc_ValueError, "k=%zd must be in [1, %zd]", k, N);
        goto done;
    }
    if (buf_get(s_obj, &sb, "scores", 1, 'f', 1, 1) < 0 || check_shape(&sb, "scores", SHAPE(B)) < 0) goto done;
    if (buf_get(n_obj, &nb, "normalized", 1, 'f', 1, 1) < 0 || check_shape(&nb, "normalized", SHAPE(B)) < 0) goto done;
    if (has_pixel) {
        if (k_obj == Py_None) {
            PyErr_SetString(PyExc_ValueError, "masks: needed with a pixel threshold");
            goto done;
        }
        if (buf_get(k_obj, &kb, "masks", 2, 'B', 1, 2) < 0 || check_shape(&kb, "masks", SHAPE(B, N)) < 0) goto done;
    }
    heaps = malloc(sizeof(float) * ((size_t)(B * k) + 1));
    if (!heaps) {
        PyErr_NoMemory();
        goto done;
    }
    job = (TopkJob){mb.view.buf, N, k, mb.strides[0], heaps, sb.view.buf, nb.view.buf,
                    has_pixel ? kb.view.buf : NULL, has_image,
                    has_image ? fmin(fmax(image_thr, 1e-12), 1 - 1e-12) : 0.0, (float)pixel_thr};
    Py_BEGIN_ALLOW_THREADS
    parallel_for(topk_maps, &job, B, 1);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(heaps);
    buf_release(&mb);
    buf_release(&sb);
    buf_release(&nb);
    buf_release(&kb);
    return result;
}

/* ================================================================= threads */

static PyObject *py_num_threads(PyObject *self, PyObject *unused) { return PyLong_FromLong(n_threads); }

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    const long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "threads must be >= 0 (0: the default)");
        return NULL;
    }
    n_threads = n == 0 ? default_threads() : (int)(n < 64 ? n : 64);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"preprocess", (PyCFunction)(void (*)(void))py_preprocess, METH_VARARGS | METH_KEYWORDS,
     "preprocess(frames, x_out, unet_out, noise, size, bgr, scale, offset, coefs=None)\n"
     "Frames (H, W, C) uint8 -> x_out (B, C, S, S) = resized * scale + offset; with unet_out\n"
     "((2B or B), C, S, S) and noise (2, C, S, S) also x_s (and x_l) by coefs (sa_s, sb_s, sa_l, sb_l)."},
    {"combine", (PyCFunction)(void (*)(void))py_combine, METH_VARARGS | METH_KEYWORDS,
     "combine(x, eps, noise, out, coefs, w, copy_x=True)\n"
     "x (B, C, S, S), eps (2B, C, S, S), noise (2, C, S, S) -> out (B, 2C, S, S) = cat(x, x0_ng)."},
    {"smooth", (PyCFunction)(void (*)(void))py_smooth, METH_VARARGS | METH_KEYWORDS,
     "smooth(maps, out, taps): separable blur of (B, H, W) float32 with edge replication."},
    {"topk_score", (PyCFunction)(void (*)(void))py_topk_score, METH_VARARGS | METH_KEYWORDS,
     "topk_score(maps, k, image_thr, pixel_thr, scores, normalized, masks=None)\n"
     "maps (B, N) float32 -> scores (B,), normalized (B,), masks (B, N) uint8 (with pixel_thr)."},
    {"num_threads", py_num_threads, METH_NOARGS, "Threads a call may use (DAD_EDGE_NUM_THREADS or the cores)."},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n): threads per call; 0 restores the default."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "CPU kernels of dad_edge (kernels/csrc).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__C(void) {
    n_threads = default_threads();
    return PyModule_Create(&module);
}
