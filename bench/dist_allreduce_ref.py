# The reference for bench_dist: all-reduce time per buffer size with PyTorch's own Gloo process group
# (python3-torch), two processes on loopback, one thread each. Prints one JSON object.
#   /usr/bin/python3 bench/dist_allreduce_ref.py --port 29650 --sizes 0.25,1,4,25,100 --iters 10
import argparse
import json
import resource
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, port, sizes, iters, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = []
    for mb in sizes:
        t = torch.ones(int(mb * (1 << 20) / 4))
        dist.all_reduce(t)  # warm-up: connections and buffers
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        dist.barrier()
        results.append({"mb": mb, "seconds": (time.perf_counter() - t0) / iters})
    queue.put({"rank": rank, "results": results,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=29650)
    ap.add_argument("--sizes", default="0.25,1,4,25,100")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--world", type=int, default=2)
    a = ap.parse_args()
    sizes = [float(s) for s in a.sizes.split(",")]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a.world, a.port, sizes, a.iters, queue)) for r in range(a.world)]
    for p in procs:
        p.start()
    out = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    out.sort(key=lambda o: o["rank"])
    print(json.dumps({"results": out[0]["results"], "peak_rss_mb": max(o["peak_rss_mb"] for o in out)}))


if __name__ == "__main__":
    main()
