/*
 * table.cu — the CUDA backend's module state (device, stream, cuBLASLt
 * handle), device memory, scratch buffers, and the ops tables: one per
 * training precision, the same entries except the GEMMs (backend/backend.h).
 * The entries docs/engine.md §2.2 marks new get their kernels beside their
 * peers (elementwise.cu for row kernels, gemm.cu for GEMMs) and one line in
 * fill() below.
 */
#include "backend/cuda/common.cuh"

extern "C" {
#include "backend/backend.h"
}

#include <stdlib.h>
#include <string.h>

ds_cuda_state g_cu;
std::mutex g_cu_lock;

void ds_cu_fail(const char *what, const char *why, const char *file, int line) {
    fprintf(stderr, "dsv3: cuda: %s failed: %s (%s:%d)\n", what, why, file, line);
    abort();
}

static int pick_device(int count) {
    const char *s = getenv("DSV3_CUDA_DEVICE");
    if (!s || !*s) s = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!s || !*s) s = getenv("LOCAL_RANK");
    int d = s && *s ? atoi(s) : 0;
    return d >= 0 && d < count ? d : d % count;
}

extern "C" int ds_cuda_built(void) { return 1; }

/* ---- DSV3_CUDA_PROFILE --------------------------------------------------------- */
int g_cu_prof;
namespace {
struct prof_row { const char *name; double s; int64_t calls; };
prof_row prof_rows[128];
int prof_n;
thread_local int prof_depth;
void prof_print(void) {
    double total = 0;
    for (int i = 0; i < prof_n; i++) total += prof_rows[i].s;
    qsort(prof_rows, (size_t)prof_n, sizeof prof_rows[0], [](const void *a, const void *b) {
        double x = ((const prof_row *)a)->s, y = ((const prof_row *)b)->s;
        return x < y ? 1 : x > y ? -1 : 0;
    });
    fprintf(stderr, "cuda profile (DSV3_CUDA_PROFILE): %.3f s in entries\n%-34s %10s %10s %10s %6s\n", total, "entry",
            "calls", "total ms", "us/call", "share");
    int64_t se, hi, ch;
    ds_cu_lt_stats(&se, &hi, &ch);
    int64_t lt8, own8, mma8, mmal;
    ds_cuda_fp8_counts(&lt8, &own8);
    ds_cuda_fp8_mma_counts(&mma8, &mmal);
    int64_t tu, mv;
    ds_cuda_lt_tune_stats(&tu, &mv, NULL);
    fprintf(stderr, "cuBLASLt: %lld algorithm searches (%lld tuned, %lld of them won by another than the heuristic's "
                    "first), %lld cached answers (%lld checked for another problem of the class); "
                    "%lld batched BF16 expert calls; FP8 GEMMs %lld on cuBLASLt, %lld on the CUDA-core kernel, "
                    "%lld on the tensor-core kernel in %lld launches\n",
            (long long)se, (long long)tu, (long long)mv, (long long)hi, (long long)ch, (long long)ds_cuda_batched_calls(), (long long)lt8,
            (long long)own8, (long long)mma8, (long long)mmal);
    for (int i = 0; i < prof_n; i++)
        fprintf(stderr, "%-34s %10lld %10.2f %10.1f %5.1f%%\n", prof_rows[i].name, (long long)prof_rows[i].calls,
                1e3 * prof_rows[i].s, 1e6 * prof_rows[i].s / (double)prof_rows[i].calls,
                total > 0 ? 100 * prof_rows[i].s / total : 0.0);
}
} // namespace
ds_cu_prof_scope::ds_cu_prof_scope(const char *n) : name(NULL), t0(0) {
    if (!n) return;                       /* profiling off */
    if (prof_depth++ > 0) {               /* nested: the outer entry's time holds it */
        name = "";
        return;
    }
    name = n;
    cudaStreamSynchronize(g_cu.stream);
    t0 = ds_now();
}
ds_cu_prof_scope::~ds_cu_prof_scope() {
    if (!name) return;
    prof_depth--;
    if (!*name) return;
    cudaStreamSynchronize(g_cu.stream);
    double dt = ds_now() - t0;
    int i = 0;
    while (i < prof_n && strcmp(prof_rows[i].name, name)) i++;
    if (i == prof_n && prof_n < 128) prof_rows[prof_n++] = prof_row{name, 0, 0};
    if (i < prof_n) prof_rows[i].s += dt, prof_rows[i].calls++;
}

extern "C" int ds_cuda_init(void) {
    if (g_cu.tried) return g_cu.ok ? 0 : ds_err("--device cuda: no CUDA device (%s)", g_cu.name);
    g_cu.tried = 1;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        snprintf(g_cu.name, sizeof g_cu.name, "%s", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        cudaGetLastError(); /* clear the sticky error of a failed runtime start */
        return ds_err("--device cuda: no CUDA device (%s)", g_cu.name);
    }
    g_cu.device = pick_device(count);
    if ((e = cudaSetDevice(g_cu.device)) != cudaSuccess || (e = cudaGetDeviceProperties(&g_cu.prop, g_cu.device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g_cu.stream, cudaStreamNonBlocking)) != cudaSuccess) {
        snprintf(g_cu.name, sizeof g_cu.name, "device %d: %s", g_cu.device, cudaGetErrorString(e));
        return ds_err("--device cuda: no CUDA device (%s)", g_cu.name);
    }
    cublasStatus_t s = cublasLtCreate(&g_cu.lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(g_cu.name, sizeof g_cu.name, "cuBLASLt: %s", cublasLtGetStatusString(s));
        return ds_err("--device cuda: no CUDA device (%s)", g_cu.name);
    }
    g_cu.lt_ws_bytes = 64u << 20;
    if ((e = cudaMalloc(&g_cu.lt_ws, g_cu.lt_ws_bytes)) != cudaSuccess) {
        snprintf(g_cu.name, sizeof g_cu.name, "workspace: %s", cudaGetErrorString(e));
        return ds_err("--device cuda: no CUDA device (%s)", g_cu.name);
    }
    snprintf(g_cu.name, sizeof g_cu.name, "%s (sm_%d%d, %d SMs)", g_cu.prop.name, g_cu.prop.major, g_cu.prop.minor,
             g_cu.prop.multiProcessorCount);
    const char *pe = getenv("DSV3_CUDA_PROFILE");
    if (pe && *pe && strcmp(pe, "0")) {
        g_cu_prof = 1;
        atexit(prof_print);
    }
    g_cu.ok = 1;
    return 0;
}

extern "C" const char *ds_cuda_device_name(void) { return g_cu.ok ? g_cu.name : ""; }

extern "C" double ds_cuda_peak_flops(int precision, char *how, size_t cap) {
    if (!g_cu.ok) return 0;
    int khz = 0;
    if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, g_cu.device) != cudaSuccess || khz <= 0) return 0;
    const int cc = g_cu.prop.major * 10 + g_cu.prop.minor;
    /* dense FLOP per clock per SM: FP32 FMA on the CUDA cores; BF16 and FP8 MMA
     * (Hopper: 989 BF16 TFLOPS = 132 SMs x 4096 x 1.83 GHz on the datasheet) */
    double f32 = 0, b16 = 0, f8 = 0;
    if (cc == 90) f32 = 256, b16 = 4096, f8 = 8192;
    else if (cc == 80) f32 = 128, b16 = 2048, f8 = 0;
    double per = precision == DS_PREC_FP8 ? (f8 > 0 ? f8 : b16) : precision == DS_PREC_BF16 ? b16 : f32;
    if (per <= 0) return 0;
    double peak = (double)g_cu.prop.multiProcessorCount * per * (double)khz * 1e3;
    if (how)
        snprintf(how, cap, "%s: %d SMs x %.0f FLOP/clock (%s) x %.2f GHz (the peak SM clock)", g_cu.prop.name,
                 g_cu.prop.multiProcessorCount, per,
                 precision == DS_PREC_FP32 ? "FP32, CUDA cores" : precision == DS_PREC_BF16 ? "BF16, tensor cores"
                                                                                           : "FP8, tensor cores",
                 khz * 1e-6);
    return peak;
}

void ds_cu_bind(void) {
    static thread_local int bound = -1;
    if (g_cu.ok && bound != g_cu.device) {
        CU_CHECK(cudaSetDevice(g_cu.device));
        bound = g_cu.device;
    }
}

/* ---- memory ---------------------------------------------------------------- */
extern "C" void *ds_cuda_alloc(size_t bytes) {
    void *p = NULL;
    ds_cu_bind();
    cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, g_cu.stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        ds_err("cuda alloc: %zu bytes: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}
extern "C" void ds_cuda_free(void *p) {
    ds_cu_bind();
    if (p) CU_CHECK(cudaFreeAsync(p, g_cu.stream));
}
extern "C" void ds_cuda_copy_h2d(void *dst, const void *src, size_t bytes) {
    /* pageable source: the runtime stages it before returning, so src may be reused at once */
    ds_cu_bind();
    if (bytes) CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_cu.stream));
}
extern "C" void ds_cuda_copy_d2h(void *dst, const void *src, size_t bytes) {
    ds_cu_bind();
    if (bytes) CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_cu.stream));
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
}
extern "C" void ds_cuda_copy_d2d(void *dst, const void *src, size_t bytes) {
    ds_cu_bind();
    if (bytes) CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_cu.stream));
}
extern "C" void ds_cuda_memset(void *dst, int byte, size_t bytes) {
    ds_cu_bind();
    if (bytes) CU_CHECK(cudaMemsetAsync(dst, byte, bytes, g_cu.stream));
}
extern "C" void ds_cuda_sync(void) {
    ds_cu_bind();
    CU_CHECK(cudaStreamSynchronize(g_cu.stream));
}

static void *scr[SCR_COUNT];
static size_t scr_n[SCR_COUNT];

void *ds_cu_scratch(int slot, size_t bytes) {
    if (bytes > scr_n[slot]) {
        if (scr[slot]) CU_CHECK(cudaFreeAsync(scr[slot], g_cu.stream));
        size_t n = bytes + bytes / 4 + 256; /* some headroom: fewer regrowths */
        CU_CHECK(cudaMallocAsync(&scr[slot], n, g_cu.stream));
        scr_n[slot] = n;
    }
    return scr[slot];
}

/* ---- the tables -------------------------------------------------------------- */
/* Filled by assignment (not designated initializers, which C++ wants in
 * declaration order), so a new struct ds_ops entry is one more line here;
 * an entry left NULL is one the CUDA backend does not have yet
 * (tests/test_backend_cuda.c lists them). */
static struct ds_ops tables[3];

static void fill(struct ds_ops *t, int precision) {
    t->name = "cuda";
    /* forward */
    t->matmul_forward = ds_cu_matmul_forward;
    t->rmsnorm_forward = ds_cu_rmsnorm_forward;
    t->rope_forward = ds_cu_rope_forward;
    t->attention_forward = ds_cu_attention_forward;
    t->swiglu_forward = ds_cu_swiglu_forward;
    t->embedding_forward = ds_cu_embedding_forward;
    t->residual_forward = ds_cu_residual_forward;
    t->moe_route_forward = ds_cu_moe_route_forward;
    /* backward */
    t->matmul_backward = ds_cu_matmul_backward;
    t->rmsnorm_backward = ds_cu_rmsnorm_backward;
    t->rope_backward = ds_cu_rope_backward;
    t->attention_backward = ds_cu_attention_backward;
    t->swiglu_backward = ds_cu_swiglu_backward;
    t->embedding_backward = ds_cu_embedding_backward;
    t->cross_entropy = ds_cu_cross_entropy;
    t->moe_route_backward = ds_cu_moe_route_backward;
    t->moe_combine_backward = ds_cu_moe_combine_backward;
    t->linear_forward = ds_cu_matmul_forward;
    t->linear_backward = ds_cu_matmul_backward;
    t->linear_fp8w_forward = ds_cu_linear_fp8w_forward;
    t->moe_permute = ds_cu_moe_permute;
    t->moe_combine_forward = ds_cu_moe_combine_forward;
    t->mla_kv_assemble = ds_cu_mla_kv_assemble;
    t->rope_tables = ds_cu_rope_tables;
    /* optimizer, decode, memory, MoE, EP (engine.cu) */
    t->sumsq = ds_cu_sumsq;
    t->adamw = ds_cu_adamw;
    t->bias_update = ds_cu_bias_update;
    t->linear_workspace = ds_cu_linear_workspace;
    t->kv_append = ds_cu_kv_append;
    t->mla_absorbed_attention = ds_cu_mla_absorbed_attention;
    t->gather_rows = ds_cu_gather_rows;
    t->act_quant_1x128 = ds_cu_act_quant_1x128;
    t->act_dequant_1x128 = ds_cu_act_dequant_1x128;
    t->argmax_rows = ds_cu_argmax_rows;
    t->sample_probs = ds_cu_sample_probs;
    t->sample_pick = ds_cu_sample_pick;
    t->logits_adjust = ds_cu_logits_adjust;
    t->probs_min_p = ds_cu_probs_min_p;
    t->host_visible = 0;
    t->alloc = ds_cu_alloc;
    t->free = ds_cuda_free;
    t->memset = ds_cuda_memset;
    t->copy_h2d = ds_cuda_copy_h2d;
    t->copy_d2h = ds_cuda_copy_d2h;
    t->copy_d2d = ds_cuda_copy_d2d;
    t->sync = ds_cuda_sync;
    t->moe_sort = ds_cu_moe_sort;
    t->grouped_linear_forward = ds_cu_grouped_linear_forward;
    t->embedding_bf16_forward = ds_cu_embedding_bf16_forward;
    t->grouped_linear_backward = ds_cu_grouped_linear_backward;
    t->mla_kv_assemble_backward = ds_cu_mla_kv_assemble_backward;
    t->moe_permute_backward = ds_cu_moe_permute_backward;
    t->balance_loss = ds_cu_balance_loss;
    t->cast_f32_bf16 = ds_cu_cast_f32_bf16;
    t->cast_bf16_f32 = ds_cu_cast_bf16_f32;
    t->rope_pos_forward = ds_cu_rope_pos_forward;
    t->token_logprobs = ds_cu_token_logprobs;
    /* precision: BF16 takes every GEMM, FP8 the linear entries only (lm_head,
     * router and eh_proj stay FP32, as in DeepSeek-V3) */
    if (precision == DS_PREC_BF16) {
        t->matmul_forward = t->linear_forward = ds_cu_matmul_forward_bf16;
        t->matmul_backward = t->linear_backward = ds_cu_matmul_backward_bf16;
    }
    /* BF16 and FP8: attention on the tensor cores (BF16 operands, FP32
     * accumulation; DeepSeek-V3 keeps attention in BF16 under FP8 training) */
    if (precision != DS_PREC_FP32) {
        t->attention_forward = ds_cu_attention_forward_bf16;
        t->attention_backward = ds_cu_attention_backward_bf16;
    }
    if (precision == DS_PREC_FP8) {
        t->linear_forward = ds_cu_linear_forward_fp8;
        t->linear_backward = ds_cu_linear_backward_fp8;
    }
}

extern "C" const struct ds_ops *ds_cuda_table(int precision) {
    if (!g_cu.ok || precision < DS_PREC_FP32 || precision > DS_PREC_FP8) return NULL;
    if (!tables[precision].name) fill(&tables[precision], precision);
    return &tables[precision];
}
