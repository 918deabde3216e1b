#!/usr/bin/python3
"""PyTorch reference for bench_train_throughput: the same models and training step as dsforge,
written the way a PyTorch user would (nn.Module, eager mode), so the benchmark compares like with
like. Debian's python3-torch 1.13 (no scaled_dot_product_attention, no torch.compile).

usage: train_throughput_ref.py CONFIG.json --batch B --seq T --steps N --warmup W --threads P
                               [--precision fp32|bf16]
Prints one JSON line: tokens_per_sec, peak_rss_mb, params, final_loss.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- GPT-2 (pre-LN, tanh GELU, tied head)
class Gpt2Block(nn.Module):
    def __init__(self, d, h, inner, eps):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x, mask):
        B, S, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).view(B, S, 3, self.h, d // self.h).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        att = (q @ k.transpose(-2, -1)).float() / math.sqrt(d // self.h) + mask
        a = (att.softmax(-1).to(v.dtype) @ v).transpose(1, 2).reshape(B, S, d)
        x = x + self.attn_proj(a)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["n_embd"]
        self.wte, self.wpe = nn.Embedding(c["vocab_size"], d), nn.Embedding(c["n_positions"], d)
        self.blocks = nn.ModuleList(Gpt2Block(d, c["n_head"], c.get("n_inner") or 4 * d, c["layer_norm_epsilon"])
                                    for _ in range(c["n_layer"]))
        self.ln_f = nn.LayerNorm(d, eps=c["layer_norm_epsilon"])

    def loss(self, tokens, mtp_weight):
        x_t, y = tokens[:, :-1], tokens[:, 1:]
        S = x_t.shape[1]
        mask = torch.full((S, S), float("-inf")).triu(1)
        x = self.wte(x_t) + self.wpe(torch.arange(S))[None]
        for b in self.blocks:
            x = b(x, mask)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


# ---------------------------------------------------------------- DeepSeek-V3 (MLA, DeepSeekMoE, MTP)
class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


def lin(i, o):
    return nn.Linear(i, o, bias=False)


def rope(x, cos, sin):  # interleaved pairs; cos/sin broadcast to x[..., d/2]
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], -1).flatten(-2)


class Mla(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H = c["hidden_size"], c["num_attention_heads"]
        self.H, self.dn, self.dr, self.dv, self.dc = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
        dqk = self.dn + self.dr
        self.q_a_proj, self.q_a_layernorm = lin(d, c["q_lora_rank"]), RMSNorm(c["q_lora_rank"], c["rms_norm_eps"])
        self.q_b_proj = lin(c["q_lora_rank"], H * dqk)
        self.kv_a_proj_with_mqa = lin(d, self.dc + self.dr)
        self.kv_a_layernorm = RMSNorm(self.dc, c["rms_norm_eps"])
        self.kv_b_proj = lin(self.dc, H * (self.dn + self.dv))
        self.o_proj = lin(H * self.dv, d)
        self.scale = 1 / math.sqrt(dqk)

    def forward(self, x, cos, sin, mask):
        B, S, _ = x.shape
        H, dn, dr, dv, dc = self.H, self.dn, self.dr, self.dv, self.dc
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, S, H, dn + dr)
        q_pe = rope(q[..., dn:], cos[None, :, None], sin[None, :, None])
        kv = self.kv_a_proj_with_mqa(x)
        c_kv = self.kv_a_layernorm(kv[..., :dc])
        k_pe = rope(kv[..., dc:], cos[None], sin[None])
        kvb = self.kv_b_proj(c_kv).view(B, S, H, dn + dv)
        k = torch.cat([kvb[..., :dn], k_pe[:, :, None].expand(B, S, H, dr)], -1).transpose(1, 2)
        v = kvb[..., dn:].transpose(1, 2)
        qf = torch.cat([q[..., :dn], q_pe], -1).transpose(1, 2)
        att = (qf @ k.transpose(-2, -1)).float() * self.scale + mask
        o = (att.softmax(-1).to(v.dtype) @ v).transpose(1, 2).reshape(B, S, H * dv)
        return self.o_proj(o)


class SwiGlu(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = lin(d, inner), lin(d, inner), lin(inner, d)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Moe(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        E, d = c["n_routed_experts"], c["hidden_size"]
        self.gate_weight = nn.Parameter(torch.empty(E, d))
        self.register_buffer("bias", torch.zeros(E))
        self.experts = nn.ModuleList(SwiGlu(d, c["moe_intermediate_size"]) for _ in range(E))
        self.shared = SwiGlu(d, c["n_shared_experts"] * c["moe_intermediate_size"]) if c.get("n_shared_experts") else None
        self.load = torch.zeros(E)

    def forward(self, x):
        c = self.c
        B, S, d = x.shape
        E, K, G = c["n_routed_experts"], c["num_experts_per_tok"], c["n_group"]
        flat = x.reshape(-1, d)
        s = (flat.float() @ self.gate_weight.float().T).sigmoid()
        choice = s.detach() + self.bias[None]
        if G > 1:
            g = choice.view(-1, G, E // G)
            keep = g.topk(2, -1).values.sum(-1).topk(c["topk_group"], -1).indices
            gmask = torch.ones(g.shape[:2], dtype=torch.bool).scatter_(1, keep, False)
            choice = g.masked_fill(gmask[..., None], float("-inf")).view(-1, E)
        idx = choice.topk(K, -1).indices
        w = s.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * c["routed_scaling_factor"]
        y = torch.zeros_like(flat)
        counts = torch.bincount(idx.flatten(), minlength=E)
        self.load += counts.float()
        for e in range(E):  # the usual dispatch: gather the expert's tokens, run it, scatter back
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y.index_add_(0, tok, self.experts[e](flat[tok]) * w[tok, slot, None].to(flat.dtype))
        if self.shared is not None:
            y = y + self.shared(flat)
        return y.view(B, S, d)

    @torch.no_grad()
    def update_bias(self, gamma):
        self.bias += gamma * torch.sign(self.load.mean() - self.load)
        self.load.zero_()


class Block(nn.Module):
    def __init__(self, c, layer, mtp=False):
        super().__init__()
        eps = c["rms_norm_eps"]
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(c["hidden_size"], eps), RMSNorm(c["hidden_size"], eps)
        self.self_attn = Mla(c)
        is_moe = c["n_routed_experts"] and (mtp or (layer >= c["first_k_dense_replace"] and layer % c["moe_layer_freq"] == 0))
        self.mlp = Moe(c) if is_moe else SwiGlu(c["hidden_size"], c["intermediate_size"])
        if mtp:
            d = c["hidden_size"]
            self.enorm, self.hnorm, self.head_norm = RMSNorm(d, eps), RMSNorm(d, eps), RMSNorm(d, eps)
            self.eh_proj = lin(2 * d, d)

    def forward(self, h, cos, sin, mask):
        x = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DeepseekV3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c, d = c, c["hidden_size"]
        self.embed = nn.Embedding(c["vocab_size"], d)
        self.layers = nn.ModuleList(Block(c, l) for l in range(c["num_hidden_layers"]))
        self.mtp = nn.ModuleList(Block(c, 0, mtp=True) for _ in range(c.get("num_nextn_predict_layers", 0)))
        self.norm = RMSNorm(d, c["rms_norm_eps"])
        self.lm_head = lin(d, c["vocab_size"])
        dr = c["qk_rope_head_dim"]
        self.inv_freq = c["rope_theta"] ** (-torch.arange(0, dr, 2, dtype=torch.float64) / dr)

    def tables(self, S):
        ang = torch.arange(S, dtype=torch.float64)[:, None] * self.inv_freq[None]
        return ang.cos().float(), ang.sin().float(), torch.full((S, S), float("-inf")).triu(1)

    def loss(self, tokens, mtp_weight):
        D = len(self.mtp)
        S = tokens.shape[1] - 1 - D
        cos, sin, mask = self.tables(S)
        h = self.embed(tokens[:, :S])
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.norm(h)
        V = self.c["vocab_size"]
        loss = F.cross_entropy(self.lm_head(h).float().reshape(-1, V), tokens[:, 1:S + 1].reshape(-1))
        if D:
            total, prev = 0, h
            for k, m in enumerate(self.mtp, start=1):
                mixed = m.eh_proj(torch.cat([m.enorm(self.embed(tokens[:, k:k + S])), m.hnorm(prev)], -1))
                prev = m(mixed, cos, sin, mask)
                logits = self.lm_head(m.head_norm(prev)).float()
                total = total + F.cross_entropy(logits.reshape(-1, V), tokens[:, k + 1:k + 1 + S].reshape(-1))
            loss = loss + mtp_weight * total / D
        return loss

    def update_bias(self, gamma):
        for m in self.modules():
            if isinstance(m, Moe):
                m.update_bias(gamma)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = json.load(open(a.config))
    model = Gpt2(c) if c.get("model_type") == "gpt2" else DeepseekV3(c)
    for n, p in model.named_parameters():  # the same init scheme as dsforge: N(0, 0.02), norms 1, biases 0
        with torch.no_grad():
            if p.dim() >= 2:
                p.normal_(0, 0.02)
            elif "ln" in n or "norm" in n or n.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    D = c.get("num_nextn_predict_layers", 0) if c.get("model_type") != "gpt2" else 0
    g = torch.Generator().manual_seed(1)
    V = c["vocab_size"]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")
    loss_value = float("nan")
    t0 = None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            t0 = time.perf_counter()
        tokens = torch.randint(V, (a.batch, a.seq + 1 + D), generator=g)
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model.loss(tokens, 0.3)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if isinstance(model, DeepseekV3):
            model.update_bias(1e-3)
        loss_value = loss.item()
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens_per_sec": a.steps * a.batch * a.seq / dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "params": sum(p.numel() for p in model.parameters()),
                      "final_loss": loss_value}))


if __name__ == "__main__":
    main()
