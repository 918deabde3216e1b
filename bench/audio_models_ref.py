# PyTorch eager reference for bench/bench_audio_models.cpp: the same audio classifiers as
# src/dsforge/audio/models.cpp (LSTM/GRU over MFCC frames, mean-pooled; the CNN over log-mel with batch
# norm and a 4 x 8 pooled grid), trained on a fixed random feature batch with AdamW and clipping at 1.
#   audio_models_ref.py ARCH ROWS FRAMES CLASSES BATCH STEPS THREADS  -> one JSON line
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Recurrent(nn.Module):
    def __init__(self, arch, rows, classes, hidden=128, layers=2, dropout=0.1):
        super().__init__()
        rnn = nn.LSTM if arch == "lstm" else nn.GRU
        self.rnn = rnn(rows, hidden, num_layers=layers, batch_first=True, bidirectional=True, dropout=dropout)
        self.head = nn.Linear(2 * hidden, classes)
        self.dropout = dropout

    def forward(self, x):  # [B, rows, frames]
        h = self.rnn(x.transpose(1, 2))[0].mean(1)
        return self.head(F.dropout(h, self.dropout, self.training))


class Cnn(nn.Module):
    def __init__(self, classes, a=32, hidden=128, dropout=0.1):
        super().__init__()
        b = 2 * a
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False)
        self.c1, self.n1, self.c2, self.n2 = conv(1, a), nn.BatchNorm2d(a), conv(a, a), nn.BatchNorm2d(a)
        self.c3, self.n3, self.c4, self.n4 = conv(a, b), nn.BatchNorm2d(b), conv(b, b), nn.BatchNorm2d(b)
        self.fc, self.head = nn.Linear(b * 32, hidden), nn.Linear(hidden, classes)
        self.dropout = dropout

    def forward(self, x):
        h = x.unsqueeze(1)
        h = F.max_pool2d(F.relu(self.n2(self.c2(F.relu(self.n1(self.c1(h)))))), 2)
        h = F.max_pool2d(F.relu(self.n4(self.c4(F.relu(self.n3(self.c3(h)))))), 2)
        h = F.adaptive_avg_pool2d(h, (4, 8)).flatten(1)
        h = F.relu(self.fc(F.dropout(h, self.dropout, self.training)))
        return self.head(F.dropout(h, self.dropout, self.training))


def main(arch, rows, frames, classes, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = Cnn(classes) if arch == "cnn" else Recurrent(arch, rows, classes)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)
    x, y = torch.randn(batch, rows, frames), torch.randint(0, classes, (batch,))
    m.train()
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    train_s = (time.perf_counter() - t0) / steps
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m.eval()
    xe = torch.randn(64, rows, frames)
    with torch.no_grad():
        m(xe)
        t0 = time.perf_counter()
        for _ in range(5):
            m(xe)
    infer = 5 * 64 / (time.perf_counter() - t0)
    print(json.dumps({"train_clips_per_s": batch / train_s, "infer_clips_per_s": infer, "train_peak_rss_mb": train_rss,
                      "parameters": sum(p.numel() for p in m.parameters())}))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:8]))
