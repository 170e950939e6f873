/*
 * ep.c — the expert-parallel exchange (see ep.h).
 */
#include "dist/ep.h"

#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
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
    for (int i = 0; i < 5; i++)
        if (ep->ws[i]) ep->ops->free(ep->ws[i]);
    free(ep->hs[0]), free(ep->hs[1]);
    ds_comm_free(ep->comm);
    memset(ep, 0, sizeof *ep);
}

void ds_ep_plan_free(ds_ep_plan *p) {
    free(p->scount), free(p->sdispl), free(p->rcount), free(p->rdispl), free(p->rc_e);
    free(p->local_counts), free(p->local_offsets), free(p->perm), free(p->iperm);
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
    if (ro > INT32_MAX) return ds_err("expert parallelism: %lld rows arrive at one rank (at most %d)", (long long)ro,
                                      INT32_MAX);
    if (ro + 1 > p->cap) {
        free(p->perm), free(p->iperm);
        p->cap = ro + 1;
        p->perm = ds_malloc((size_t)p->cap * sizeof(int32_t));
        p->iperm = ds_malloc((size_t)p->cap * sizeof(int32_t));
    }
    int64_t *next = ds_malloc((size_t)El * sizeof(int64_t));
    memcpy(next, p->local_offsets, (size_t)El * sizeof(int64_t));
    int64_t i = 0;
    for (int r = 0; r < S; r++)
        for (int64_t j = 0; j < El; j++)
            for (int64_t k = 0; k < p->rc_e[r * El + j]; k++) p->perm[i++] = (int32_t)next[j]++;
    const char *f = getenv("DSV3_FAULT"); /* tests: rows left in arrival order (wrong experts) */
    if (f && !strcmp(f, "ep-order"))
        for (int64_t q = 0; q < ro; q++) p->perm[q] = (int32_t)q;
    for (int64_t q = 0; q < ro; q++) p->iperm[p->perm[q]] = (int32_t)q;
    free(next);
    return ro;
}

/* staging buffer `slot` of at least `bytes` (memory of ep->ops), or NULL with ds_err */
static void *ws(ds_ep *ep, int slot, size_t bytes) {
    if (bytes > ep->ws_bytes[slot] || !ep->ws[slot]) {
        size_t n = bytes + bytes / 4 + 256;
        if (ep->ws[slot]) ep->ops->free(ep->ws[slot]);
        ep->ws[slot] = ep->ops->alloc(n);
        ep->ws_bytes[slot] = ep->ws[slot] ? n : 0;
    }
    return ep->ws[slot];
}

/* one alltoallv of ns elements out, nr in (esz bytes each) between buffers
 * of ep->ops: handed to the communicator as they are when the table is host
 * visible, else staged through host copies (copy_d2h, copy_h2d) */
static int a2a(ds_ep *ep, const void *send, const int64_t *sc, const int64_t *sd, void *recv, const int64_t *rc,
               const int64_t *rd, ds_comm_dtype dt, size_t esz, int64_t ns, int64_t nr) {
    if (ep->ops->host_visible) return ds_alltoallv(ep->comm, send, sc, sd, recv, rc, rd, dt);
    size_t need[2] = {(size_t)ns * esz, (size_t)nr * esz};
    for (int i = 0; i < 2; i++)
        if (need[i] > ep->hs_bytes[i] || !ep->hs[i]) {
            free(ep->hs[i]);
            ep->hs_bytes[i] = need[i] + need[i] / 4 + 256;
            ep->hs[i] = ds_malloc(ep->hs_bytes[i]);
        }
    ep->ops->copy_d2h(ep->hs[0], send, need[0]);
    int rcode = ds_alltoallv(ep->comm, ep->hs[0], sc, sd, ep->hs[1], rc, rd, dt);
    if (!rcode) ep->ops->copy_h2d(recv, ep->hs[1], need[1]);
    return rcode;
}

/* one alltoallv of rows (width H) at a precision: FP32 as is, BF16 rounded to
 * nearest even, FP8 E4M3 codes with one FP32 scale per 1x128 tile of a row */
static int rows_alltoallv(ds_ep *ep, const float *src, const int64_t *sc, const int64_t *sd, float *dst,
                          const int64_t *rc, const int64_t *rd, int64_t H, int precision, int64_t nsend, int64_t nrecv) {
    const struct ds_ops *ops = ep->ops;
    int S = ep->comm->size, rcode = -1;
    int64_t *a = ds_malloc((size_t)S * 4 * sizeof(int64_t)), *b = a + S, *x = a + 2 * S, *y = a + 3 * S;
    for (int r = 0; r < S; r++) a[r] = sc[r] * H, b[r] = sd[r] * H, x[r] = rc[r] * H, y[r] = rd[r] * H;
    if (precision == DS_EP_FP32) {
        rcode = a2a(ep, src, a, b, dst, x, y, DS_COMM_F32, 4, nsend * H, nrecv * H);
    } else if (precision == DS_EP_BF16) {
        uint16_t *s16 = ws(ep, 1, (size_t)(nsend * H) * 2), *r16 = ws(ep, 2, (size_t)(nrecv * H) * 2);
        if (s16 && r16) {
            ops->cast_f32_bf16(s16, src, nsend * H);
            rcode = a2a(ep, s16, a, b, r16, x, y, DS_COMM_U16, 2, nsend * H, nrecv * H);
            if (!rcode) ops->cast_bf16_f32(dst, r16, nrecv * H);
        }
    } else {
        int64_t nt = ds_ceil_div(H, DS_QUANT_GROUP); /* scales per row */
        uint8_t *sq = ws(ep, 1, (size_t)(nsend * H)), *rq = ws(ep, 2, (size_t)(nrecv * H));
        float *ss = ws(ep, 3, (size_t)(nsend * nt) * 4), *rs = ws(ep, 4, (size_t)(nrecv * nt) * 4);
        if (sq && rq && ss && rs) {
            ops->act_quant_1x128(sq, ss, src, nsend, H);
            rcode = a2a(ep, sq, a, b, rq, x, y, DS_COMM_U8, 1, nsend * H, nrecv * H);
            for (int r = 0; r < S; r++) a[r] = sc[r] * nt, b[r] = sd[r] * nt, x[r] = rc[r] * nt, y[r] = rd[r] * nt;
            if (!rcode) rcode = a2a(ep, ss, a, b, rs, x, y, DS_COMM_F32, 4, nsend * nt, nrecv * nt);
            if (!rcode) ops->act_dequant_1x128(dst, rq, rs, nrecv, H);
        }
    }
    free(a);
    return rcode;
}

int ds_ep_send(ds_ep *ep, const struct ds_ops *ops, const ds_ep_plan *p, const float *src, float *dst, int64_t H,
               int dir, int precision, ds_comm_kind kind) {
    if (!ep->ops) ep->ops = ops;
    DS_ASSERT(ep->ops == ops); /* the staging buffers belong to one table */
    ds_comm_set_kind(ep->comm, kind);
    int rc = -1;
    float *tmp = ws(ep, 0, (size_t)(p->R_recv * H) * sizeof(float));
    if (tmp && dir == DS_EP_TO_OWNER) { /* arrival order (source, expert) -> grouped (expert, source) */
        rc = rows_alltoallv(ep, src, p->scount, p->sdispl, tmp, p->rcount, p->rdispl, H, precision, p->R_send,
                            p->R_recv);
        if (!rc) ops->gather_rows(dst, tmp, p->iperm, p->R_recv, H);
    } else if (tmp) {
        ops->gather_rows(tmp, src, p->perm, p->R_recv, H);
        rc = rows_alltoallv(ep, tmp, p->rcount, p->rdispl, dst, p->scount, p->sdispl, H, precision, p->R_recv,
                            p->R_send);
    }
    ds_comm_set_kind(ep->comm, DS_COMM_OTHER);
    return rc;
}
