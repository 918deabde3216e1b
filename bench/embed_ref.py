#!/usr/bin/python3
"""gensim 4.2 reference for bench_embed: Word2Vec with the same corpus and settings as dsforge
(LineSentence: one sentence per line, whitespace tokens), timed the same way (vocabulary pass and
training separately), evaluated with gensim's own evaluate_word_pairs / evaluate_word_analogies (3CosAdd only: gensim 4.2 ignores
the similarity_function argument).

usage: embed_ref.py CORPUS --method sgns|cbow --dim D --window W --min-count M --negative N
                    --sample S --epochs E --threads T --alpha A --seed SEED --data-dir DIR --out VECTORS.bin
Prints one JSON line.
"""
import argparse
import json
import logging
import resource
import time

from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence, FAST_VERSION


def main():
    p = argparse.ArgumentParser()
    p.add_argument("corpus")
    p.add_argument("--method", default="sgns")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--restrict-vocab", type=int, default=300000)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model = Word2Vec(vector_size=a.dim, window=a.window, min_count=a.min_count, negative=a.negative, hs=0,
                     sample=a.sample, sg=1 if a.method == "sgns" else 0, cbow_mean=1, workers=a.threads,
                     alpha=a.alpha, min_alpha=0.0001, seed=a.seed, epochs=a.epochs)
    t0 = time.perf_counter()
    model.build_vocab(LineSentence(a.corpus))
    vocab_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.train(LineSentence(a.corpus), total_examples=model.corpus_count, epochs=a.epochs)
    train_s = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kv = model.wv
    kv.save_word2vec_format(a.out, binary=True)

    ws = kv.evaluate_word_pairs(f"{a.data_dir}/wordsim353.tsv", restrict_vocab=a.restrict_vocab)
    sl = kv.evaluate_word_pairs(f"{a.data_dir}/simlex999.txt", restrict_vocab=a.restrict_vocab)
    add, _ = kv.evaluate_word_analogies(f"{a.data_dir}/questions-words.txt", restrict_vocab=a.restrict_vocab)
    # gensim 4.2's evaluate_word_analogies ignores similarity_function (always 3CosAdd): no 3CosMul here
    print(json.dumps({
        "gensim_fast_version": FAST_VERSION,
        "vocab_size": len(kv.index_to_key),
        "corpus_words": model.corpus_total_words,
        "vocab_seconds": vocab_s,
        "train_seconds": train_s,
        "words_per_second": model.corpus_total_words * a.epochs / train_s,
        "peak_rss_mb": peak_mb,
        "wordsim353_spearman": ws[1][0],
        "wordsim353_oov_percent": ws[2],
        "simlex999_spearman": sl[1][0],
        "simlex999_oov_percent": sl[2],
        "analogy_3cosadd": add,
    }))


if __name__ == "__main__":
    main()
