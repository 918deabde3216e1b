#!/usr/bin/env python3
"""PyTorch reference for dsforge's image classifiers (src/dsforge/vision/models.cpp), written from the
architectures' descriptions: the same layers in torch.nn, loaded by parameter name.

  vision_ref.py forward MODEL_DIR INPUT.safetensors OUT.safetensors   # logits of input "x" (eval mode)
  vision_ref.py bench ARCH C H W CLASSES BATCH STEPS THREADS         # train and inference speed, JSON line

A small safetensors reader/writer is here too (Debian has no python3-safetensors)."""
import json
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "I64": torch.int64, "U8": torch.uint8, "BF16": torch.bfloat16, "F16": torch.float16}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + a:base + b]), dtype=DTYPES[info["dtype"]]) if b > a else torch.empty(0)
        out[name] = t.reshape(info["shape"])
    return out


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = bytes(t.contiguous().to(torch.float32).view(torch.uint8).flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Cnn(nn.Module):
    def __init__(self, c):
        super().__init__()
        a, b = c["width_base"], 2 * c["width_base"]
        self.conv1 = nn.Conv2d(c["channels"], a, 3, padding=1)
        self.conv2 = nn.Conv2d(a, a, 3, padding=1)
        self.conv3 = nn.Conv2d(a, b, 3, padding=1)
        self.conv4 = nn.Conv2d(b, b, 3, padding=1)
        self.fc = nn.Linear(b * (c["height"] // 4) * (c["width"] // 4), c["hidden"])
        self.head = nn.Linear(c["hidden"], c["classes"])
        self.p = c["dropout"]

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        h = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(h)))), 2).flatten(1)
        h = F.relu(self.fc(F.dropout(h, self.p, self.training)))
        return self.head(F.dropout(h, self.p, self.training))


class ConvBn(nn.Module):
    def __init__(self, i, o, k, s, g):
        super().__init__()
        self.conv = nn.Conv2d(i, o, k, stride=s, padding=k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return F.relu6(self.bn(self.conv(x)))


class MobileNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        w = c["width_base"]
        self.stem = ConvBn(c["channels"], w, 3, 1, 1)
        plan = [(2 * w, 1), (4 * w, 2), (4 * w, 1), (8 * w, 2), (8 * w, 1)]
        i = w
        for k, (o, s) in enumerate(plan):
            setattr(self, f"block{k}_dw", ConvBn(i, i, 3, s, i))
            setattr(self, f"block{k}_pw", ConvBn(i, o, 1, 1, 1))
            i = o
        self.n = len(plan)
        self.head = nn.Linear(i, c["classes"])
        self.p = c["dropout"]

    def forward(self, x):
        h = self.stem(x)
        for k in range(self.n):
            h = getattr(self, f"block{k}_pw")(getattr(self, f"block{k}_dw")(h))
        return self.head(F.dropout(h.mean((2, 3)), self.p, self.training))


class Block(nn.Module):  # GPT-2's block: pre-LayerNorm attention and a 4x GELU (tanh) MLP; no mask here
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, mlp)
        self.mlp.c_proj = nn.Linear(mlp, d)
        self.h = heads

    def forward(self, x):
        B, S, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).view(B, S, 3, self.h, d // self.h).unbind(2)
        a = torch.softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / (d // self.h) ** 0.5, -1) @ v.transpose(1, 2)
        x = x + self.attn.c_proj(a.transpose(1, 2).reshape(B, S, d))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class Vit(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["dim"], c["patch"]
        self.patch_embed = nn.Conv2d(c["channels"], d, p, stride=p)
        n = (c["height"] // p) * (c["width"] // p) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        for i in range(c["depth"]):
            setattr(self, f"block{i}", Block(d, c["heads"], c["mlp"]))
        self.depth = c["depth"]
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, c["classes"])
        self.p = c["dropout"]

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], 1, -1), t], 1) + self.pos_embed
        t = F.dropout(t, self.p, self.training)
        for i in range(self.depth):
            t = getattr(self, f"block{i}")(t)  # (dsforge's blocks drop out their residual branches in training)
        return self.head(self.norm(t[:, 0]))


def build(c):
    return {"cnn": Cnn, "mobilenet": MobileNet, "vit": Vit}[c["arch"]](c)


def forward(model_dir, inp, out):
    cfg = json.load(open(f"{model_dir}/config.json"))["image_model"]
    cfg.setdefault("width_base", 32)
    cfg.setdefault("hidden", 128)
    m = build(cfg)
    state = load_safetensors(f"{model_dir}/model.safetensors")
    m.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    m.eval()
    with torch.no_grad():
        y = m(load_safetensors(inp)["x"])
    save_safetensors(out, {"logits": y})


def bench(arch, C, H, W, K, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = {"arch": arch, "channels": C, "height": H, "width": W, "classes": K, "width_base": 32, "hidden": 128,
         "dropout": 0.1, "dim": 64, "depth": 4, "heads": 4, "mlp": 128,
         "patch": max(p for p in range(1, min(H, W) + 1) if H % p == 0 and W % p == 0 and (H // p) * (W // p) >= 16)}
    m = build(c)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(batch, C, H, W)
    y = torch.randint(0, K, (batch,))
    m.train()
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    train_s = (time.perf_counter() - t0) / steps
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the peak so far: training's
    m.eval()
    xe = torch.randn(64, C, H, W)  # the batch dsforge image eval uses
    with torch.no_grad():
        m(xe)
        t0 = time.perf_counter()
        for _ in range(5):
            m(xe)
    infer = 5 * 64 / (time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"train_images_per_s": batch / train_s, "infer_images_per_s": infer, "train_peak_rss_mb": train_rss,
                      "peak_rss_mb": rss}))


if __name__ == "__main__":
    if sys.argv[1] == "forward":
        forward(*sys.argv[2:5])
    else:
        a = sys.argv[2:]
        bench(a[0], *map(int, a[1:8]))
