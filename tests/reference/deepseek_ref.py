#!/usr/bin/python3
"""Independent reference of DeepSeek-V3 (DEEPSEEK.md §1), written from the specification with
PyTorch 1.13 ops, to cross-check dsforge's logits.

usage: deepseek_ref.py MODEL_DIR LOGITS.safetensors "t0 t1 t2 ..."
Loads config.json + model.safetensors from MODEL_DIR, recomputes the logits (and MTP depth-1
logits) of the token sequence, and prints the max relative errors against the file written by
`dsforge model logits`, as JSON.
"""
import json
import math
import struct
import sys

import torch


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + b:base + e]), dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).double()
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    # x [..., S, (H,) d_r] with interleaved pairs (x[2i], x[2i+1]) rotated by pos * theta^(-2i/d_r)
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos[:, None].double() * freqs[None, :]  # [S, d/2]
    if x.dim() == 3:  # [B, S, d] (shared key)
        cos, sin = ang.cos()[None], ang.sin()[None]
    else:  # [B, S, H, d]
        cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], -1).flatten(-2)


class Ref:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w

    def lin(self, x, name):
        return x @ self.w[name + ".weight"].T

    def mla(self, x, p):
        c = self.c
        B, S, _ = x.shape
        H, dn, dr, dv, dc = (c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                             c["v_head_dim"], c["kv_lora_rank"])
        eps = c["rms_norm_eps"]
        if c.get("q_lora_rank"):
            q = self.lin(rms_norm(self.lin(x, p + "q_a_proj"), self.w[p + "q_a_layernorm.weight"], eps), p + "q_b_proj")
        else:
            q = self.lin(x, p + "q_proj")
        q = q.view(B, S, H, dn + dr)
        pos = torch.arange(S)
        q_nope, q_pe = q[..., :dn], rope(q[..., dn:], pos, c["rope_theta"])
        kv = self.lin(x, p + "kv_a_proj_with_mqa")
        c_kv = rms_norm(kv[..., :dc], self.w[p + "kv_a_layernorm.weight"], eps)
        k_pe = rope(kv[..., dc:], pos, c["rope_theta"])
        kvb = self.lin(c_kv, p + "kv_b_proj").view(B, S, H, dn + dv)
        k = torch.cat([kvb[..., :dn], k_pe[:, :, None, :].expand(B, S, H, dr)], -1)
        v = kvb[..., dn:]
        qf = torch.cat([q_nope, q_pe], -1)
        scores = torch.einsum("bshd,bthd->bsht", qf, k) / math.sqrt(dn + dr)
        scores = scores + torch.full((S, S), float("-inf"), dtype=torch.float64).triu(1)[None, :, None, :]
        o = torch.einsum("bsht,bthd->bshd", scores.softmax(-1), v).reshape(B, S, H * dv)
        return self.lin(o, p + "o_proj")

    def mlp(self, x, p):
        return self.lin(torch.nn.functional.silu(self.lin(x, p + "gate_proj")) * self.lin(x, p + "up_proj"), p + "down_proj")

    def moe(self, x, p):
        c = self.c
        B, S, d = x.shape
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        flat = x.reshape(-1, d)
        logits = flat @ self.w[p + "gate.weight"].T
        s = logits.sigmoid() if c["scoring_func"] == "sigmoid" else logits.softmax(-1)
        choice = s + self.w[p + "gate.e_score_correction_bias"][None] if c["scoring_func"] == "sigmoid" else s.clone()
        G = c["n_group"]
        if G > 1:
            g = choice.view(-1, G, E // G)
            gs = g.topk(2, -1).values.sum(-1) if c["scoring_func"] == "sigmoid" else g.amax(-1)
            keep = gs.topk(c["topk_group"], -1).indices
            gmask = torch.ones_like(gs, dtype=torch.bool).scatter_(1, keep, False)
            choice = g.masked_fill(gmask[..., None], float("-inf")).view(-1, E)
        idx = choice.topk(K, -1).indices
        wts = s.gather(1, idx)
        if c["scoring_func"] == "sigmoid" and c["norm_topk_prob"]:
            wts = wts / (wts.sum(-1, keepdim=True) + 1e-20)
        wts = wts * c["routed_scaling_factor"]
        y = torch.zeros_like(flat)
        for t in range(flat.shape[0]):  # token by token: a deliberately different dispatch
            for j in range(K):
                e = int(idx[t, j])
                y[t] += wts[t, j] * self.mlp(flat[t:t + 1], f"{p}experts.{e}.")[0]
        if c.get("n_shared_experts"):
            y = y + self.mlp(flat, p + "shared_experts.")
        return y.view(B, S, d)

    def block(self, h, l):
        c, p = self.c, f"model.layers.{l}."
        eps = c["rms_norm_eps"]
        x = h + self.mla(rms_norm(h, self.w[p + "input_layernorm.weight"], eps), p + "self_attn.")
        n = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], eps)
        is_moe = c["n_routed_experts"] and (l >= c["num_hidden_layers"] or
                                            (l >= c["first_k_dense_replace"] and l % c["moe_layer_freq"] == 0))
        return x + (self.moe(n, p + "mlp.") if is_moe else self.mlp(n, p + "mlp."))

    def run(self, tokens):
        c = self.c
        eps = c["rms_norm_eps"]
        emb = self.w["model.embed_tokens.weight"]
        h = emb[tokens][None]
        for l in range(c["num_hidden_layers"]):
            h = self.block(h, l)
        hn = rms_norm(h, self.w["model.norm.weight"], eps)
        logits = hn @ self.w["lm_head.weight"].T
        mtp = None
        if c.get("num_nextn_predict_layers", 0) >= 1 and len(tokens) >= 2:
            L, p = c["num_hidden_layers"], f"model.layers.{c['num_hidden_layers']}."
            n = len(tokens) - 1  # slot j: [enorm(Emb(t_{j+1})); hnorm(h_j)] predicts t_{j+2}
            e = rms_norm(emb[tokens[1:]][None], self.w[p + "enorm.weight"], eps)
            hh = rms_norm(hn[:, :n], self.w[p + "hnorm.weight"], eps)
            m = torch.cat([e, hh], -1) @ self.w[p + "eh_proj.weight"].T
            m = self.block(m, L)
            mtp = rms_norm(m, self.w[p + "shared_head.norm.weight"], eps) @ self.w["lm_head.weight"].T
        return logits[0], (mtp[0] if mtp is not None else None)


def main():
    model_dir, logits_path, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split()]
    cfg = json.load(open(f"{model_dir}/config.json"))
    ref = Ref(cfg, read_safetensors(f"{model_dir}/model.safetensors"))
    with torch.no_grad():
        logits, mtp = ref.run(torch.tensor(tokens))
    ours = read_safetensors(logits_path)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    out = {"logits_rel_err": rel(ours["logits"], logits)}
    if mtp is not None:
        out["mtp_rel_err"] = rel(ours["mtp_logits"], mtp)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
