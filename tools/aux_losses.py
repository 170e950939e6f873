"""aux_losses.py — DeepSeek load-balance losses computed in PyTorch from recorded router outputs.

Definitions (also in tests/fixtures/model/README.md; docs/deepseek-v3.md §6.2, §6.3). For one MoE layer
and one sequence b of T tokens (every position t = 0..T-1 counts, no target needed), with
E routed experts, K selected per token, router logits z (B, T, E) in FP32:

  affinities   s_{t,i} = sigmoid(z) (scoring "sigmoid", V3) or softmax(z) (scoring "softmax", V2)
  normalised   s'_{t,i} = s_{t,i} / sum_j s_{t,j}           (= s for softmax)
  selection    sel_{t,i} = 1 if expert i is among the K experts the router actually chose for token t
               (the biased, group-limited choice of the forward pass); carries no gradient
  f_i  = E / (K T) * sum_t sel_{t,i}          P_i = (1/T) * sum_t s'_{t,i}

  seq-wise (V3 eq. 17-20):   L_bal  = alpha  * sum_i f_i P_i
  expert-level (V2 eq. 23):  L_exp  = alpha1 * sum_i f_i P_i
  device-level (V2 eq. 25):  devices = the n_group contiguous expert groups E_d (|E_d| = E/n_group)
                             f'_d = mean_{i in E_d} f_i,  P'_d = sum_{i in E_d} P_i
                             L_dev  = alpha2 * sum_d f'_d P'_d
  communication (V2 eq. 29): M = topk_group;  g_{t,d} = 1 if any selected expert of token t is in E_d
                             f''_d = n_group / (M T) * sum_t g_{t,d};  P''_d = P'_d
                             L_comm = alpha3 * sum_d f''_d P''_d

Each loss is averaged over the B sequences and summed over the main model's MoE layers.
"""
import torch


def _affinities(logits, scoring):
    if scoring == "sigmoid":
        s = logits.sigmoid()
        return s / s.sum(-1, keepdim=True)
    return logits.softmax(-1)


def _per_sequence(logits, idx, B, T, E, K, scoring):
    """logits (B*T, E) with grad, idx (B*T, K) -> f (B, E) (no grad), P (B, E), sel (B, T, E)."""
    sp = _affinities(logits, scoring).view(B, T, E)
    sel = torch.zeros(B * T, E, dtype=torch.float32).scatter_(1, idx, 1.0).view(B, T, E)
    f = sel.sum(1) * (E / (K * T))
    P = sp.mean(1)
    return f, P, sel


def seq_balance_loss(calls, cfg, B, T, alpha, scoring, layers):
    """calls: [(layer, router_logits (B*T, E), topk_indices (B*T, K))] from fixture_models.RouterRecorder."""
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    total = torch.zeros(())
    per_layer = {}
    for l, logits, idx in calls:
        if l not in layers:
            continue
        f, P, _ = _per_sequence(logits, idx, B, T, E, K, scoring)
        lb = alpha * (f * P).sum(-1).mean()
        per_layer[l] = lb
        total = total + lb
    return total, per_layer


def v2_aux_losses(calls, cfg, B, T, a1, a2, a3, scoring, layers):
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    D, M = cfg.n_group, cfg.topk_group
    exp = torch.zeros(())
    dev = torch.zeros(())
    comm = torch.zeros(())
    for l, logits, idx in calls:
        if l not in layers:
            continue
        f, P, sel = _per_sequence(logits, idx, B, T, E, K, scoring)
        fd = f.view(B, D, E // D).mean(-1)            # f'_d
        Pd = P.view(B, D, E // D).sum(-1)             # P'_d = P''_d
        sent = (sel.view(B, T, D, E // D).sum(-1) > 0).float()  # g_{t,d}
        fdd = sent.sum(1) * (D / (M * T))             # f''_d
        exp = exp + a1 * (f * P).sum(-1).mean()
        dev = dev + a2 * (fd * Pd).sum(-1).mean()
        comm = comm + a3 * (fdd * Pd).sum(-1).mean()
    return exp, dev, comm
