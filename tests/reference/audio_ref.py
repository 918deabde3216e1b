# torchaudio 0.13 reference for tests/test_audio.cpp and bench/bench_audio.cpp (Debian python3-torchaudio).
#   audio_ref.py features PARAMS.json IN.wav OUT_PREFIX   -> OUT_PREFIX.{spectrogram,mel,logmel,mfcc,resampled}.f32
#   audio_ref.py bench PARAMS.json LIST.txt               -> prints "seconds peak_rss_kib" for MFCCs of every file
# PARAMS: sample_rate, n_fft, win_length, hop_length, n_mels, n_mfcc, f_min, f_max, top_db, mel_scale, mel_norm,
# resample_to (0 = none).
import json
import resource
import warnings
import sys
import time

import torch
import torchaudio

warnings.filterwarnings("ignore", message="At least one mel filterbank")  # 128 mels over 201 bins, as torchaudio's defaults
torch.set_num_threads(int(json.load(open(sys.argv[2])).get("threads", 1)))


def transforms(p, rate):
    common = dict(n_fft=p["n_fft"], win_length=p["win_length"] or None, hop_length=p["hop_length"] or None)
    mel_kw = dict(f_min=p["f_min"], f_max=p["f_max"] or None, n_mels=p["n_mels"],
                  norm=p["mel_norm"] or None, mel_scale=p["mel_scale"], **common)
    return (torchaudio.transforms.Spectrogram(power=2.0, **common),
            torchaudio.transforms.MelSpectrogram(sample_rate=rate, **mel_kw),
            torchaudio.transforms.AmplitudeToDB("power", top_db=p["top_db"] if p["top_db"] >= 0 else None),
            torchaudio.transforms.MFCC(sample_rate=rate, n_mfcc=p["n_mfcc"], melkwargs=mel_kw))


def load(path, p):
    x, rate = torchaudio.load(path)
    x = x.mean(0)
    if p["resample_to"]:
        x = torchaudio.functional.resample(x, rate, p["resample_to"])
        rate = p["resample_to"]
    return x, rate


def main():
    mode, p = sys.argv[1], json.load(open(sys.argv[2]))
    if mode == "features":
        x, rate = load(sys.argv[3], p)
        spec, mel, db, mfcc = transforms(p, rate)
        out = sys.argv[4]
        m = mel(x)
        for name, t in (("resampled", x), ("spectrogram", spec(x)), ("mel", m), ("logmel", db(m)), ("mfcc", mfcc(x))):
            t.contiguous().numpy().astype("float32").tofile(out + "." + name + ".f32")
    elif mode == "bench":
        files = [l.strip() for l in open(sys.argv[3]) if l.strip()]
        t0 = time.perf_counter()
        cache = {}
        total = 0.0
        for f in files:
            x, rate = load(f, p)
            if rate not in cache:
                cache[rate] = transforms(p, rate)[3]
            total += float(cache[rate](x).sum())
        seconds = time.perf_counter() - t0
        print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, total)


main()
