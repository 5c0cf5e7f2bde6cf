"""Cold start of fine-tuning steps on a GPU: how long the first step of each new batch shape takes.

EfficientNet-Lite0 (random weights: the kernels, not the numbers, matter), 96 px, bf16 autocast, channels-last,
SGD; the first step of a 128-image batch, a second one, the first of an 82-image batch (a short last batch), the
mean of 30 warm steps, and the same for eval-mode passes (128, then 66 images). With cuDNN on (PyTorch's default)
and off, each in a fresh process (the kernels cuDNN compiles at run time live for one process). Needs CUDA::

    python benchmarks/gpu_warmup.py --out $OUT/gpu_warmup.json      # runs `--cudnn on`, `off`, `on`, each fresh
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(cudnn: bool, size: int = 96) -> dict:
    """Seconds of each step kind in this process (``cudnn`` sets torch.backends.cudnn.enabled)."""
    import timm
    import torch

    torch.backends.cudnn.enabled = cudnn
    dev = torch.device("cuda")
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def batch(b):
        return torch.randn(b, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)

    def step(b):
        x, y = batch(b), torch.randint(0, 10, (b,), device=dev)
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        return time.perf_counter() - t

    def ev(b):
        x = batch(b)
        t = time.perf_counter()
        m.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            m(x).float().cpu()
        m.train()
        return time.perf_counter() - t

    torch.zeros(1, device=dev)
    torch.cuda.synchronize()
    r = {"first128": step(128), "second128": step(128), "first82": step(82)}
    r["steady128"] = sum(step(128) for _ in range(30)) / 30
    r["eval_first128"], r["eval_first66"] = ev(128), ev(66)
    r["eval_steady128"] = sum(ev(128) for _ in range(10)) / 10
    return {"cudnn": cudnn, "cudnn_version": torch.backends.cudnn.version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(), **r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cudnn", choices=["on", "off"], help="measure in this process (internal)")
    ap.add_argument("--out", default="gpu_warmup.json")
    a = ap.parse_args()
    if a.cudnn:
        print(json.dumps(measure(a.cudnn == "on")))
        return
    rows = []
    for mode in ("on", "off", "on"):
        r = subprocess.run([sys.executable, __file__, "--cudnn", mode], capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    keys = ["first128", "second128", "first82", "steady128", "eval_first128", "eval_first66", "eval_steady128"]
    print("| cuDNN | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {'on' if r['cudnn'] else 'off'} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
