/*
 * ep.c — the expert-parallel exchange (see ep.h).
 */
#include "dist/ep.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "num/dtype.h"
#include "num/quant.h"

int ds_ep_precision_from_name(const char *s) {
    return !strcmp(s, "fp32") ? DS_EP_FP32 : !strcmp(s, "bf16") ? DS_EP_BF16 : !strcmp(s, "fp8") ? DS_EP_FP8 : -1;
}

int ds_ep_init(ds_ep *ep, ds_comm *world, int ep_size, int64_t n_experts) {
    memset(ep, 0, sizeof *ep);
    if (ep_size < 1 || world->size % ep_size)
        return ds_err("--ep %d does not divide the %d processes", ep_size, world->size);
    if (n_experts % ep_size)
        return ds_err("--ep %d does not divide the model's %lld routed experts", ep_size, (long long)n_experts);
    ep->comm = ds_comm_split(world, world->rank / ep_size, world->rank);
    if (!ep->comm) return -1;
    ep->size = ep->comm->size, ep->rank = ep->comm->rank;
    ep->n_experts = n_experts, ep->experts_per_rank = n_experts / ep_size;
    ep->first_expert = ep->rank * ep->experts_per_rank;
    return 0;
}

void ds_ep_free(ds_ep *ep) {
    ds_comm_free(ep->comm);
    memset(ep, 0, sizeof *ep);
}

void ds_ep_plan_free(ds_ep_plan *p) {
    free(p->scount), free(p->sdispl), free(p->rcount), free(p->rdispl), free(p->rc_e);
    free(p->local_counts), free(p->local_offsets), free(p->perm);
    memset(p, 0, sizeof *p);
}

int64_t ds_ep_plan_make(ds_ep *ep, ds_ep_plan *p, const int64_t *counts) {
    const int S = ep->size;
    const int64_t El = ep->experts_per_rank;
    if (p->size != S) {
        ds_ep_plan_free(p);
        p->size = S;
        p->scount = ds_malloc((size_t)S * sizeof(int64_t)), p->sdispl = ds_malloc((size_t)S * sizeof(int64_t));
        p->rcount = ds_malloc((size_t)S * sizeof(int64_t)), p->rdispl = ds_malloc((size_t)S * sizeof(int64_t));
        p->rc_e = ds_malloc((size_t)(S * El) * sizeof(int64_t));
        p->local_counts = ds_malloc((size_t)El * sizeof(int64_t));
        p->local_offsets = ds_malloc((size_t)(El + 1) * sizeof(int64_t));
    }
    ds_comm_set_kind(ep->comm, DS_COMM_OTHER);
    /* experts are contiguous per owner: counts is already (owner, local expert) */
    if (ds_alltoall(ep->comm, counts, p->rc_e, El, DS_COMM_I64)) return -1;
    int64_t so = 0, ro = 0;
    for (int r = 0; r < S; r++) {
        p->scount[r] = 0, p->rcount[r] = 0;
        for (int64_t j = 0; j < El; j++) p->scount[r] += counts[r * El + j], p->rcount[r] += p->rc_e[r * El + j];
        p->sdispl[r] = so, so += p->scount[r];
        p->rdispl[r] = ro, ro += p->rcount[r];
    }
    p->R_send = so, p->R_recv = ro;
    /* received order (source, expert) -> grouped order (expert, source) */
    p->local_offsets[0] = 0;
    for (int64_t j = 0; j < El; j++) {
        p->local_counts[j] = 0;
        for (int r = 0; r < S; r++) p->local_counts[j] += p->rc_e[r * El + j];
        p->local_offsets[j + 1] = p->local_offsets[j] + p->local_counts[j];
    }
    if (ro + 1 > p->cap) {
        free(p->perm);
        p->cap = ro + 1;
        p->perm = ds_malloc((size_t)p->cap * sizeof(int64_t));
    }
    int64_t *next = ds_malloc((size_t)El * sizeof(int64_t));
    memcpy(next, p->local_offsets, (size_t)El * sizeof(int64_t));
    int64_t i = 0;
    for (int r = 0; r < S; r++)
        for (int64_t j = 0; j < El; j++)
            for (int64_t k = 0; k < p->rc_e[r * El + j]; k++) p->perm[i++] = next[j]++;
    const char *f = getenv("DSV3_FAULT"); /* tests: rows left in arrival order (wrong experts) */
    if (f && !strcmp(f, "ep-order"))
        for (int64_t q = 0; q < ro; q++) p->perm[q] = q;
    free(next);
    return ro;
}

void ds_ep_round(float *x, int64_t rows, int64_t H, int precision) {
    if (precision == DS_EP_BF16) {
#pragma omp parallel for schedule(static) if (rows * H > 65536)
        for (int64_t i = 0; i < rows * H; i++) x[i] = ds_bf16_to_f32(ds_f32_to_bf16(x[i]));
    } else if (precision == DS_EP_FP8 && rows > 0) {
        ds_quant_opts qo = ds_quant_defaults(DS_QUANT_TILE_1x128);
        int64_t ns = ds_quant_scale_count(DS_QUANT_TILE_1x128, rows, H);
        uint8_t *q = ds_malloc((size_t)(rows * H));
        float *s = ds_malloc((size_t)ns * sizeof(float));
        ds_quantize(q, s, x, rows, H, &qo);
        ds_dequantize(x, q, s, rows, H, DS_FP8_E4M3, DS_QUANT_TILE_1x128);
        free(q), free(s);
    }
}

/* one alltoallv of rows (width H) at a precision: the rounding is the same as ds_ep_round */
static int rows_alltoallv(ds_comm *c, const float *src, const int64_t *sc, const int64_t *sd, float *dst,
                          const int64_t *rc, const int64_t *rd, int64_t H, int precision, int64_t nsend, int64_t nrecv) {
    int S = c->size, rcode = -1;
    int64_t *a = ds_malloc((size_t)S * 4 * sizeof(int64_t)), *b = a + S, *x = a + 2 * S, *y = a + 3 * S;
    int64_t w = H;
    if (precision == DS_EP_FP8) w = H; /* codes: H bytes; scales below */
    for (int r = 0; r < S; r++) a[r] = sc[r] * w, b[r] = sd[r] * w, x[r] = rc[r] * w, y[r] = rd[r] * w;
    if (precision == DS_EP_FP32) {
        rcode = ds_alltoallv(c, src, a, b, dst, x, y, DS_COMM_F32);
    } else if (precision == DS_EP_BF16) {
        uint16_t *s16 = ds_malloc((size_t)(nsend * H + 1) * 2), *r16 = ds_malloc((size_t)(nrecv * H + 1) * 2);
        for (int64_t i = 0; i < nsend * H; i++) s16[i] = ds_f32_to_bf16(src[i]);
        rcode = ds_alltoallv(c, s16, a, b, r16, x, y, DS_COMM_U16);
        for (int64_t i = 0; i < nrecv * H; i++) dst[i] = ds_bf16_to_f32(r16[i]);
        free(s16), free(r16);
    } else {
        ds_quant_opts qo = ds_quant_defaults(DS_QUANT_TILE_1x128);
        int64_t nt = ds_ceil_div(H, DS_QUANT_GROUP); /* scales per row */
        uint8_t *sq = ds_malloc((size_t)(nsend * H + 1)), *rq = ds_malloc((size_t)(nrecv * H + 1));
        float *ss = ds_malloc((size_t)(nsend * nt + 1) * 4), *rs = ds_malloc((size_t)(nrecv * nt + 1) * 4);
        if (nsend) ds_quantize(sq, ss, src, nsend, H, &qo);
        rcode = ds_alltoallv(c, sq, a, b, rq, x, y, DS_COMM_U8);
        for (int r = 0; r < S; r++) a[r] = sc[r] * nt, b[r] = sd[r] * nt, x[r] = rc[r] * nt, y[r] = rd[r] * nt;
        if (!rcode) rcode = ds_alltoallv(c, ss, a, b, rs, x, y, DS_COMM_F32);
        if (!rcode && nrecv) ds_dequantize(dst, rq, rs, nrecv, H, DS_FP8_E4M3, DS_QUANT_TILE_1x128);
        free(sq), free(rq), free(ss), free(rs);
    }
    free(a);
    return rcode;
}

int ds_ep_send(ds_ep *ep, const ds_ep_plan *p, const float *src, float *dst, int64_t H, int dir, int precision,
               ds_comm_kind kind) {
    ds_comm_set_kind(ep->comm, kind);
    int rc;
    if (dir == DS_EP_TO_OWNER) {
        float *tmp = ds_malloc((size_t)(p->R_recv * H + 1) * sizeof(float));
        rc = rows_alltoallv(ep->comm, src, p->scount, p->sdispl, tmp, p->rcount, p->rdispl, H, precision, p->R_send,
                            p->R_recv);
#pragma omp parallel for schedule(static) if (p->R_recv * H > 65536)
        for (int64_t i = 0; i < p->R_recv; i++) memcpy(dst + p->perm[i] * H, tmp + i * H, (size_t)H * sizeof(float));
        free(tmp);
    } else {
        float *tmp = ds_malloc((size_t)(p->R_recv * H + 1) * sizeof(float));
#pragma omp parallel for schedule(static) if (p->R_recv * H > 65536)
        for (int64_t i = 0; i < p->R_recv; i++) memcpy(tmp + i * H, src + p->perm[i] * H, (size_t)H * sizeof(float));
        rc = rows_alltoallv(ep->comm, tmp, p->rcount, p->rdispl, dst, p->scount, p->sdispl, H, precision, p->R_recv,
                            p->R_send);
        free(tmp);
    }
    ds_comm_set_kind(ep->comm, DS_COMM_OTHER);
    return rc;
}
