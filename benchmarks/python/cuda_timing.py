"""What the PyTorch benchmarks share: torch.cuda.graph's warm-up recipe and CUDA-event timing."""
import statistics

import torch


def warm_up_on_side_stream(fn, calls=3):
    """Runs fn `calls` times on a side stream, then joins it: what torch.cuda.graphs documents before a capture
    (lazy initialisations, cuBLAS workspaces and autograd's state made outside the graph)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(calls):
            fn()
    torch.cuda.current_stream().wait_stream(side)


def median_event_ms(run, repeats, warmup=5):
    """The median over `repeats` calls of run()'s device time in milliseconds, each call between two CUDA events and
    synchronised, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
