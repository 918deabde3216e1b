#!/usr/bin/env python3
"""PyTorch eager reference for dsforge's PGD attack on an image classifier (bench/bench_robust.cpp):
the model of an `image train` folder rebuilt with vision_ref.py, the first N images of a prepared split,
PGD under L-infinity written from Madry et al. (2018): a uniform random start in the eps-ball, `steps`
steps of alpha * sign(gradient) (alpha = 2.5 eps / steps), projection onto the ball and onto [0, 1].

  robust_ref.py pgd MODEL_DIR SHARD.safetensors N EPS STEPS BATCH THREADS   # JSON line"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vision_ref  # noqa: E402


def pgd(model_dir, shard, n, eps, steps, batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(f"{model_dir}/config.json"))
    c = cfg["image_model"]
    c.setdefault("width_base", 32)
    c.setdefault("hidden", 128)
    m = vision_ref.build(c)
    state = vision_ref.load_safetensors(f"{model_dir}/model.safetensors")
    m.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    data = vision_ref.load_safetensors(shard)
    images = data["images"][:n].to(torch.float32) / 255.0
    labels = data["labels"][:n].to(torch.int64)
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    alpha = 2.5 * eps / steps
    clean = robust = 0
    t0 = time.perf_counter()
    for b in range(0, n, batch):
        x, y = images[b:b + batch], labels[b:b + batch]
        delta = torch.empty_like(x).uniform_(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(m((x + delta - mean) / std), y, reduction="sum")
            g, = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            clean += (m((x - mean) / std).argmax(-1) == y).sum().item()
            robust += (m((x + delta - mean) / std).argmax(-1) == y).sum().item()
    seconds = time.perf_counter() - t0
    print(json.dumps({"images_per_s": n / seconds, "seconds": seconds, "clean_accuracy": clean / n, "robust_accuracy": robust / n,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    a = sys.argv[2:]
    pgd(a[0], a[1], int(a[2]), float(a[3]), int(a[4]), int(a[5]), int(a[6]))
