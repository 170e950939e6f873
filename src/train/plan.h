/*
 * plan.h — `dsv3 plan`: memory, traffic and step time of a training layout
 * (pipeline stages S, expert parallelism E, data parallelism D = N / S) for a
 * real config, on paper.  Every figure is a stated formula:
 *
 *   parameters   P_e = routed-expert weights of the main layers, P_n = every
 *                other trained parameter (main model + MTP; buffers excluded)
 *   per device   n = P_n / S (replicated over D), x = P_e / (S·E)
 *   memory       weights BF16 2(n+x); gradients FP32 4(n+x); optimizer
 *                (FP32 master + BF16 m and v, DeepSeek-V3) 8(n/D + x/(D/E))
 *                (ZeRO-1 shards over the ranks that hold the same weights)
 *   activations  a = saved values per token per MoE layer (BF16, the tensors
 *                this implementation keeps, plan.c act_per_token); under 1F1B
 *                stage s of L_s layers holds m_s = min(S-s, M) micro-batches
 *                (ds_pp_in_flight, as the trainer runs it): 2·b·T·m_s·L_s·a
 *                without recomputation, 2·b·T·m_s·L_s·H + 2·b·T·a with (only
 *                layer inputs kept, one layer recomputed at a time); the
 *                figure per device is the largest stage's
 *   pipeline     stages from ds_pp_split (cost-balanced, or --pp-layers) at
 *                sequence length T; M micro-batches per step (default: the
 *                sequences of one data-parallel replica / b); 1F1B bubble
 *                analytic (S-1)/(M+S-1) and simulated (ds_pp_simulate) with
 *                forward f_s = stage cost, backward 2·f_s; DualPipe
 *                (DeepSeek-V3 report, Table 2) with B = 2F, W = F and
 *                F&B = F + B (no credit for overlapping a forward and a
 *                backward chunk), F the costliest stage's forward:
 *                (S/2-1)(F&B+B-3W) = (S/2-1)·2F, against 1F1B's
 *                (S-1)(F+B) = (S-1)·3F; as a share of a step:
 *                bubble / (bubble + M·(F+B)); 2x the parameters per device
 *                and S+1 micro-batches of activations on the first device
 *   all-to-all   per token per MoE layer over the network: X·H bytes per
 *                copy in FP8 (1 + 4/128 with the 1x128 scales) or 2·X·H in
 *                BF16 for the dispatch, 2·X·H for the combine and for each of
 *                the two backward transfers; X = K copies, or min(M, K) with
 *                node-limited routing (one copy per node, forwarded inside it)
 *   gradients    ring reduce-scatter (FP32) + all-gather (BF16) per step:
 *                6·(D-1)/D·n + 6·(D_e-1)/D_e·x bytes sent, D_e = D/E
 *   step time    compute 3·forward FLOPs / (N·peak); network: all-to-all
 *                bytes of a device / IB bandwidth + gradient bytes / IB
 *                bandwidth; "overlapped" = the larger, "serial" = the sum;
 *                GPU hours per 10^12 tokens = N·t / tokens_per_step·10^12 / 3600
 */
#ifndef DS_PLAN_H
#define DS_PLAN_H

#include <stdint.h>

#include "model/config.h"

typedef struct {
    int64_t gpus, gpus_per_node, ep, pp, dp;
    int64_t micro_batch, seq, global_batch; /* sequences, tokens, sequences */
    double peak_flops, ib_bytes_s;          /* per device */
    int64_t micro_batches;                  /* M; 0: global_batch / (D·micro_batch), at least 1 */
    const char *pp_layers;                  /* NULL or "": cost-balanced split; else "a,b,..." */
} ds_plan_in;

typedef struct {
    int64_t total, activated, mtp;          /* parameter counts (layout) */
    int64_t p_expert, p_other;              /* P_e, P_n */
    double n, x;                            /* per device */
    double mem_weights, mem_grads, mem_optim, mem_act, mem_act_recompute;
    double act_per_token;                   /* a */
    int64_t moe_layers;
    double a2a_token_layer[2][2];           /* [node-limited][fp8 dispatch] bytes per token per MoE layer */
    double a2a_device_step;                 /* node-limited, FP8: bytes a device sends per step */
    double grad_device_step;
    double flops_per_token;                 /* 3 x forward, main model + MTP */
    double t_compute, t_a2a, t_grad, t_overlap, t_serial;
    double gpu_hours_per_t_overlap, gpu_hours_per_t_serial; /* per 10^12 tokens */
    /* pipeline (S = in->pp stages; arrays of S, first of S + 1) */
    int64_t pp_m;                           /* M */
    int64_t *pp_first;                      /* stage s: layers [first[s], first[s+1]) */
    double *pp_cost;                        /* forward FLOPs per token of each stage (ds_pp_stage_cost) */
    double *pp_share;                       /* cost / sum of costs */
    int64_t *pp_in_flight;                  /* m_s */
    double *pp_act, *pp_act_recompute;      /* activation bytes of each stage */
    double *pp_busy;                        /* simulated busy share of the makespan */
    double pp_bubble_analytic, pp_bubble_sim;
    double pp_f;                            /* F: the costliest stage's forward FLOPs per token */
    double pp_1f1b_bubble_f, pp_dualpipe_bubble_f; /* bubble time in units of F (DualPipe: -1 for odd S) */
    double pp_dualpipe_share;               /* DualPipe bubble / (bubble + M·3F); -1 for odd S */
} ds_plan_out;

/* 0, or -1 with ds_err (a layout that does not divide, a bad split).
 * ds_plan_free releases the pipeline arrays (after success or failure). */
int ds_plan(const ds_config *c, const ds_plan_in *in, ds_plan_out *out);
void ds_plan_free(ds_plan_out *out);

#endif
